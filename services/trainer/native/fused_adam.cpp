// One Adam step as libtorch's fused kernel (`torch._fused_adam_`, what `torch.optim.Adam(...,
// fused=True)` runs): a single vectorised, multi-threaded pass over parameter, gradient and both
// moments, where the same step written as tensor operations makes about a dozen passes and three
// temporaries. tch does not bind `_fused_adam_`, so this is the C entry point the trainer calls
// (services/trainer/src/optimizer.rs), on the `torch::Tensor*` handles tch holds.
#include <ATen/core/Tensor.h>
#include <ATen/ops/_fused_adam.h>

#include <cstddef>
#include <cstring>
#include <exception>
#include <optional>

extern "C" int lexmesh_fused_adam(void *param, void *grad, void *exp_avg, void *exp_avg_sq,
                                  void *step, double lr, double beta1, double beta2,
                                  double weight_decay, double eps, char *error,
                                  std::size_t error_len) {
  try {
    auto &p = *static_cast<at::Tensor *>(param);
    auto &g = *static_cast<at::Tensor *>(grad);
    auto &m = *static_cast<at::Tensor *>(exp_avg);
    auto &v = *static_cast<at::Tensor *>(exp_avg_sq);
    auto &s = *static_cast<at::Tensor *>(step);
    at::_fused_adam_({p}, {g}, {m}, {v}, {}, {s}, lr, beta1, beta2, weight_decay, eps,
                     /*amsgrad=*/false, /*maximize=*/false, std::nullopt, std::nullopt);
    return 0;
  } catch (const std::exception &e) {
    if (error_len > 0) {
      std::strncpy(error, e.what(), error_len - 1);
      error[error_len - 1] = '\0';
    }
    return 1;
  }
}
