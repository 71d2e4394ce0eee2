#!/usr/bin/env python3
"""Publisher contract: every job message that `schemas/<kind>-job.v1.json` allows is either
taken by the mesh or refused for a reason that depends on the data, never for its shape.

What it proves. An outside system that knows lexmesh only through the published JSON Schemas
(`schemas/*.v1.json`) can publish any message those schemas accept: the mesh never answers one
with a shape or value error (`invalid_message`, `invalid_value`, `invalid_job_id`,
`invalid_json`, `payload_too_large`, `internal`, ...). Each message must either be `accepted`
(or `completed`), or fail before `accepted` (with `retrying: false`) with a code that depends
on the data it names:

    train, preprocess  invalid_dataset, dataset_not_found, empty_dataset
    evaluate           the same, and model_not_found
    optimize           the same, and invalid_value for the rules between fields that a
                       schema cannot state (a range's low above its high, a grid larger
                       than `trials`, ASHA's max_t other than max_epochs, trial ids longer
                       than 64 characters): checked on receipt, before anything runs

and a job that was accepted must not fail afterwards with `invalid_dataset`,
`dataset_not_found` or `model_not_found` (those checks come before `accepted`). No answer within
--timeout (60 s) is a violation too, and so is an event that does not match
`schemas/job-event.v1.json`. An accepted job whose final event does not come within the 120 s
allowance below is only warned about (after `accepted` anything goes).

How. For each kind, Hypothesis (with a fixed seed, no example database) draws --per-kind
messages from `hypothesis_jsonschema.from_schema(schema)` (the kinds side by side, a process
each up to the number of cores); each is checked with jsonschema's
Draft 2020-12 validator first (a generator bug is not the service's fault). Every message gets
the job id `pc-<kind>-<seed>-<i>`; about half of them (a seeded `random.Random`) get real
references so the accept path runs too: `evaluate`'s `model_id` names a model this script
trained first (`pc-setup-model-<seed>`), an `{"object": ...}` dataset names files this script
uploaded to the `lexmesh_datasets` object store (data/sample/train.jsonl, validation.jsonl), a
`{"prepared": ...}` dataset names the `dataset_id` of a preprocess job this script ran first
(`pc-setup-data-<seed>`); where an object dataset names `text_field` / `label_field`, those
become `text` / `label`. The messages go to `lexmesh.jobs.<kind>` through JetStream with
`Nats-Msg-Id: <job_id>`, at most --window (4) awaiting their outcome at a time; the script
follows `lexmesh.events.<job_id>.>` (core NATS), cancels each accepted job at once
(`lexmesh.control.<job_id>.cancel`) and, before it exits, waits up to 120 s in all for those
jobs' final events so that none keep running. The same seed draws the same messages.

How it is run. `scripts/setup-publisher-tests` makes `.tools/publisher-venv/` (pinned nats-py,
hypothesis, hypothesis-jsonschema, jsonschema); the Rust test `tests/publisher_contract.rs`
starts a mesh and runs

    .tools/publisher-venv/bin/python tests/publisher/contract.py --nats URL --per-kind N [--seed S]
        [--kinds train,preprocess,evaluate,optimize] [--schemas DIR] [--timeout 60] [--window 4]
        [--dry-run]

By hand: `lexmesh up` (on a fresh server: job ids are per seed, and a finished job is never run
again), then the line above. `--dry-run` only generates and validates, without NATS.

Output: progress on stderr (`contract: ...`); on stdout one block per violation (the message,
shortened, and the events it got), then one line of JSON with per-kind counts (sent, real_refs,
accepted, completed, rejected by code, violations by code, unfinished, and how the accepted
jobs ended: cancelled, completed, failed:<code>). Exit status: 0 when
every message behaved, 1 when one did not, 2 when the run could not be made (no server, a
set-up job failed, a generator bug, bad arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import copy
import hashlib
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("train", "preprocess", "evaluate", "optimize")

DATA_CODES = frozenset({"invalid_dataset", "dataset_not_found", "empty_dataset"})
ALLOWED_BEFORE_ACCEPTED = {
    "train": DATA_CODES,
    "preprocess": DATA_CODES,
    "evaluate": DATA_CODES | {"model_not_found"},
    # The rules between an optimize job's fields that JSON Schema cannot state (see the
    # docstring), checked before anything runs.
    "optimize": DATA_CODES | {"invalid_value"},
}
# Checks that must be made before `accepted`: failing with one of these afterwards is a violation.
CHECKED_BEFORE_ACCEPTED = frozenset({"invalid_dataset", "dataset_not_found", "model_not_found"})

SETUP_RECORDS = 40  # records of data/sample/train.jsonl in the set-up jobs
SETUP_TIMEOUT_S = 300.0
FINAL_ALLOWANCE_S = 120.0  # all accepted jobs together, after the last outcome
SHOW_CHARS = 300

TRAIN_KEY = "uploads/publisher-contract-train.jsonl"
VALIDATION_KEY = "uploads/publisher-contract-validation.jsonl"


def say(text: str) -> None:
    print(f"contract: {text}", file=sys.stderr, flush=True)


def shorten(text: str, limit: int = SHOW_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 20] + f"... ({len(text)} chars)"


# --------------------------------------------------------------------------------------------
# Generation


def load_schema(schemas: Path, name: str) -> dict:
    path = schemas / f"{name}.v1.json"
    with path.open(encoding="utf-8") as f:
        return json.load(f)


@contextlib.contextmanager
def strategies_built_once() -> Iterator[None]:
    """Makes hypothesis-jsonschema build the strategy of each subschema once, not at every draw.

    Its object strategy builds the strategy of a property's schema while drawing, through its
    private `__from_schema` (canonicalising and merging the schema, which serialises it to JSON
    many times over): for our nested schemas that was about four fifths of the generation time,
    and the generation most of this script's run. A strategy only describes how to draw, so the
    same one, reused, draws the same values from the same choices: the messages of a seed stay
    the same (`--dry-run`'s digest shows it). The cache lives while one kind is drawn. Should a
    release of hypothesis-jsonschema rename the function, the run is only slower, and says so.
    """
    from hypothesis_jsonschema import _from_schema as module

    name = "__from_schema"  # module level: no name mangling
    build = getattr(module, name, None)
    if build is None:
        say(f"note: hypothesis_jsonschema._from_schema.{name} is gone: strategies are built at "
            "every draw (slower)")
        yield
        return
    built: dict = {}

    def build_once(schema: Any, *, alphabet: Any, custom_formats: Any) -> Any:
        # The schema by its JSON text (key order aside; 1 and 1.0 apart); the other arguments
        # are the same objects throughout one `from_schema`.
        key = (json.dumps(schema, sort_keys=True), id(alphabet), id(custom_formats))
        entry = built.get(key)
        if entry is None:
            strategy = build(schema, alphabet=alphabet, custom_formats=custom_formats)
            # The arguments are kept too, so that their ids are not reused meanwhile.
            entry = built[key] = (strategy, alphabet, custom_formats)
        return entry[0]

    setattr(module, name, build_once)
    try:
        yield
    finally:
        setattr(module, name, build)


def generate(kind: str, schema: dict, n: int, seed: int) -> list:
    """Draws `n` messages (fewer only if Hypothesis runs out) from the schema, deterministically
    for a given seed: a fixed `@seed`, no database, generation phase only."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as fixed_seed
    from hypothesis_jsonschema import from_schema

    drawn: list = []

    @fixed_seed(seed * 16 + KINDS.index(kind))
    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],
        print_blob=False,
    )
    @given(from_schema(schema))
    def draw(message: Any) -> None:
        drawn.append(message)

    with strategies_built_once():
        draw()
    return drawn[:n]


@dataclass
class Refs:
    """Names of things that exist on the mesh (or placeholders in a dry run)."""

    model_id: str
    train_key: str
    validation_key: str
    dataset_id: str


def make_real(kind: str, message: dict, refs: Refs) -> dict:
    """The message with its references pointing at existing data; every other field is kept."""
    message = copy.deepcopy(message)
    dataset = message.get("dataset")
    if isinstance(dataset, dict) and isinstance(dataset.get("object"), dict):
        obj = dataset["object"]
        obj["key"] = refs.train_key
        if obj.get("validation_key") is not None:
            obj["validation_key"] = refs.validation_key
        # Random field names would only make the file unreadable: name the real ones.
        if "text_field" in obj:
            obj["text_field"] = "text"
        if "label_field" in obj:
            obj["label_field"] = "label"
    elif isinstance(dataset, dict) and isinstance(dataset.get("prepared"), dict):
        dataset["prepared"]["dataset_id"] = refs.dataset_id
    if kind == "evaluate":
        message["model_id"] = refs.model_id
    return message


def dataset_variant(message: dict) -> str:
    dataset = message.get("dataset")
    return next(iter(dataset)) if isinstance(dataset, dict) and dataset else "?"


@dataclass
class Job:
    kind: str
    index: int
    job_id: str
    message: dict
    payload: bytes
    real: bool
    # filled in while it runs
    events: list = field(default_factory=list)  # (event dict | None, subject, problem | None)
    accepted: bool = False
    decisive: Optional[dict] = None
    final: Optional[dict] = None
    publish_error: Optional[str] = None
    cancel_reply: Optional[str] = None
    decided: Optional[asyncio.Event] = None
    ended: Optional[asyncio.Event] = None


def timed_generate(kind: str, schema: dict, n: int, seed: int) -> tuple[list, float]:
    """`generate` and the seconds it took (run in a worker process)."""
    started = time.monotonic()
    messages = generate(kind, schema, n, seed)
    return messages, time.monotonic() - started


def draw_all(args: argparse.Namespace, schemas: dict) -> tuple[dict, dict]:
    """The messages of every kind, each checked against its schema; and generation figures.

    The kinds are drawn side by side, one process each up to the number of cores: drawing is
    most of the run's time and uses one core. Each kind's draw depends only on the seed and
    its schema, so the messages are the same as drawn one after the other."""
    from jsonschema import Draft202012Validator

    for kind in args.kinds:
        Draft202012Validator.check_schema(schemas[kind])
    work = [(kind, schemas[kind], args.per_kind, args.seed) for kind in args.kinds]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    processes = min(len(work), cores or 1)
    if processes > 1:
        with concurrent.futures.ProcessPoolExecutor(processes) as pool:
            results = list(pool.map(timed_generate, *zip(*work)))
    else:
        results = [timed_generate(*item) for item in work]
    drawn: dict = {}
    stats: dict = {}
    for kind, (messages, seconds) in zip(args.kinds, results):
        validator = Draft202012Validator(schemas[kind])
        for message in messages:
            error = next(iter(validator.iter_errors(message)), None)
            if error is not None:
                raise RunError(
                    f"generator bug: hypothesis-jsonschema drew a {kind} message that its "
                    f"schema rejects ({shorten(error.message, 160)}): "
                    f"{shorten(json.dumps(message, ensure_ascii=False))}"
                )
        drawn[kind] = messages
        stats[kind] = {
            "generated": len(messages),
            "schema_valid": len(messages),
            "generation_s": round(seconds, 2),
        }
    return drawn, stats


def build_jobs(
    args: argparse.Namespace, schemas: dict, drawn: dict, refs: Refs
) -> tuple[list, dict]:
    """The messages with their job ids, about half with real references; and their figures."""
    from jsonschema import Draft202012Validator

    jobs: list = []
    stats: dict = {}
    for kind in args.kinds:
        validator = Draft202012Validator(schemas[kind])
        rng = random.Random(args.seed * 16 + KINDS.index(kind))
        variants: Counter = Counter()
        sizes = []
        for i, generated in enumerate(drawn[kind]):
            job_id = f"pc-{kind}-{args.seed}-{i}"
            message = dict(generated, job_id=job_id)
            real = False
            if rng.random() < 0.5:
                changed = make_real(kind, message, refs)
                real = changed != message
                message = changed
            error = next(iter(validator.iter_errors(message)), None)
            if error is not None:
                raise RunError(
                    f"bug in this script: {job_id} with its references set breaks the "
                    f"schema ({shorten(error.message, 160)})"
                )
            payload = json.dumps(message, ensure_ascii=False, allow_nan=False).encode("utf-8")
            sizes.append(len(payload))
            variants[dataset_variant(message)] += 1
            jobs.append(Job(kind, i, job_id, message, payload, real))
        stats[kind] = {
            "real_refs": sum(j.real for j in jobs if j.kind == kind),
            "datasets": dict(sorted(variants.items())),
            "max_bytes": max(sizes, default=0),
        }
    return jobs, stats


# --------------------------------------------------------------------------------------------
# The mesh


class Mesh:
    def __init__(self, args: argparse.Namespace, event_schema: dict) -> None:
        from jsonschema import Draft202012Validator

        self.args = args
        self.event_validator = Draft202012Validator(event_schema)
        self.event_branches = {}
        for branch in event_schema.get("oneOf", []):
            name = branch.get("properties", {}).get("event", {}).get("const")
            if name:
                alone = dict(branch, **{"$defs": event_schema.get("$defs", {})})
                self.event_branches[name] = Draft202012Validator(alone)
        self.nc: Any = None
        self.js: Any = None
        self.unattributed: list = []  # failed events of messages too malformed to name a job
        self.answered = 0
        self.started = time.monotonic()

    async def connect(self) -> None:
        import nats

        async def quiet(_error: Exception) -> None:
            pass

        try:
            self.nc = await nats.connect(
                self.args.nats,
                connect_timeout=5,
                max_reconnect_attempts=120,
                reconnect_time_wait=0.5,
                error_cb=quiet,
            )
        except Exception as e:  # noqa: BLE001 - any failure to connect ends the run
            raise RunError(f"cannot connect to {self.args.nats}: {e!r}") from e
        self.js = self.nc.jetstream(timeout=10)

        async def on_seq_failed(msg: Any) -> None:
            if msg.subject.split(".")[2].startswith("seq-"):
                self.unattributed.append(msg.data.decode("utf-8", "replace"))

        await self.nc.subscribe("lexmesh.events.*.failed", cb=on_seq_failed)

    async def wait_ready(self) -> None:
        """The jobs and events streams and the datasets store exist (services create them)."""
        deadline = time.monotonic() + self.args.ready_timeout
        missing = ""
        while True:
            try:
                await self.js.stream_info("LEXMESH_JOBS")
                await self.js.stream_info("LEXMESH_EVENTS")
                await self.js.object_store("lexmesh_datasets")
                return
            except Exception as e:  # noqa: BLE001 - not there yet, or no JetStream yet
                missing = repr(e)
            if time.monotonic() > deadline:
                raise RunError(
                    f"the mesh is not ready after {self.args.ready_timeout:.0f} s "
                    f"(streams LEXMESH_JOBS, LEXMESH_EVENTS, store lexmesh_datasets): {missing}"
                )
            await asyncio.sleep(0.5)

    async def check_fresh(self) -> None:
        """Job ids are per seed and a finished job is never run again: refuse a used seed."""
        try:
            kv = await self.js.key_value("lexmesh_jobs")
        except Exception:  # noqa: BLE001 - no record store yet: nothing ran
            return
        for kind in self.args.kinds:
            job_id = f"pc-{kind}-{self.args.seed}-0"
            try:
                await kv.get(job_id)
            except Exception:  # noqa: BLE001 - KeyNotFoundError and friends
                continue
            raise RunError(
                f"job {job_id} already exists on this server: seed {self.args.seed} was "
                "used before; take another --seed or a fresh server"
            )

    # ---- set-up

    async def run_setup_job(self, kind: str, job: dict) -> dict:
        """Publishes a set-up job and returns its `completed` event. Events are read from the
        events stream from its start, so a set-up job done by an earlier run is found too."""
        from nats.js.api import DeliverPolicy

        job_id = job["job_id"]
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        seen: list = []

        async def on_event(msg: Any) -> None:
            try:
                event = json.loads(msg.data)
            except ValueError:
                return
            seen.append(event.get("event"))
            final = event.get("event") in ("completed", "cancelled") or (
                event.get("event") == "failed" and not event.get("retrying")
            )
            if final and not done.done():
                done.set_result(event)

        sub = await self.js.subscribe(
            f"lexmesh.events.{job_id}.>",
            cb=on_event,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        try:
            await self.js.publish(
                f"lexmesh.jobs.{kind}",
                json.dumps(job).encode(),
                headers={"Nats-Msg-Id": job_id},
            )
            try:
                event = await asyncio.wait_for(done, SETUP_TIMEOUT_S)
            except asyncio.TimeoutError:
                raise RunError(
                    f"set-up {kind} job {job_id} did not finish in {SETUP_TIMEOUT_S:.0f} s "
                    f"(events: {seen})"
                ) from None
        finally:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        if event.get("event") != "completed":
            raise RunError(f"set-up {kind} job {job_id} did not complete: {json.dumps(event)}")
        return event

    async def setup(self, kinds: list) -> Refs:
        seed = self.args.seed
        data = Path(self.args.data)
        train_bytes = (data / "train.jsonl").read_bytes()
        validation_bytes = (data / "validation.jsonl").read_bytes()
        store = await self.js.object_store("lexmesh_datasets")
        await store.put(TRAIN_KEY, train_bytes)
        await store.put(VALIDATION_KEY, validation_bytes)
        lines = [line for line in train_bytes.decode("utf-8").splitlines() if line.strip()]
        records = [json.loads(line) for line in lines[:SETUP_RECORDS]]
        inline = {"inline": {"train": [{"text": r["text"], "label": r["label"]} for r in records]}}
        model_id = f"pc-setup-model-{seed}"
        waits = [
            self.run_setup_job(
                "preprocess", {"job_id": f"pc-setup-data-{seed}", "dataset": inline}
            )
        ]
        if "evaluate" in kinds:
            waits.append(
                self.run_setup_job(
                    "train",
                    {"job_id": model_id, "dataset": inline, "settings": {"epochs": 1}},
                )
            )
        results = await asyncio.gather(*waits, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        dataset_id = results[0]["result"]["preprocess"]["dataset_id"]
        return Refs(model_id, TRAIN_KEY, VALIDATION_KEY, dataset_id)

    # ---- the contract messages

    def _on_event(self, job: Job, msg: Any) -> None:
        problem = None
        try:
            event = json.loads(msg.data)
        except ValueError:
            job.events.append((None, msg.subject, f"not JSON: {msg.data[:120]!r}"))
            return
        errors = list(self.event_validator.iter_errors(event))
        if errors:
            # Explain it against the branch of its own `"event"`, not the other branches.
            name = event.get("event") if isinstance(event, dict) else None
            branch = self.event_branches.get(name) if isinstance(name, str) else None
            error = deepest((branch and list(branch.iter_errors(event))) or errors)
            where = "/".join(str(p) for p in error.absolute_path) or "(top)"
            problem = f"breaks job-event.v1.json at {where}: {shorten(error.message, 160)}"
        elif msg.subject.rsplit(".", 1)[-1] != event.get("event"):
            problem = f"subject {msg.subject} but event {event.get('event')!r}"
        job.events.append((event, msg.subject, problem))
        if not isinstance(event, dict):
            return
        name = event.get("event")
        final = name in ("completed", "cancelled") or (
            name == "failed" and event.get("retrying") is False
        )
        if name == "accepted":
            job.accepted = True
        if (name == "accepted" or final) and job.decisive is None:
            job.decisive = event
            job.decided.set()
        if final and job.final is None:
            job.final = event
            job.ended.set()

    async def drive(self, job: Job, window: asyncio.Semaphore) -> None:
        """Publishes one message and follows it to its outcome (then frees its window place);
        cancels it when it was accepted. Its final event is awaited later, in `wait_final`."""
        job.decided = asyncio.Event()
        job.ended = asyncio.Event()

        async def on_event(msg: Any) -> None:
            self._on_event(job, msg)

        sub = None
        try:
            sub = await self.nc.subscribe(f"lexmesh.events.{job.job_id}.>", cb=on_event)
            await self.nc.flush()
            ack = await self.js.publish(
                f"lexmesh.jobs.{job.kind}", job.payload, headers={"Nats-Msg-Id": job.job_id}
            )
            if ack.duplicate:
                job.publish_error = "JetStream dropped it as a duplicate (job id used before)"
            else:
                try:
                    await asyncio.wait_for(job.decided.wait(), self.args.timeout)
                except asyncio.TimeoutError:
                    pass
        except Exception as e:  # noqa: BLE001 - reported as a violation of this message
            job.publish_error = f"publish failed: {e!r}"
        finally:
            window.release()
        self.answered += 1
        if self.answered % 50 == 0:
            say(f"{self.answered} messages answered ({time.monotonic() - self.started:.1f} s)")
        if job.accepted and job.final is None:
            await self.cancel(job)  # the subscription stays until its final event
        elif sub is not None:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001
                pass

    async def cancel(self, job: Job) -> None:
        body = json.dumps({"job_id": job.job_id}).encode()
        try:
            reply = await self.nc.request(f"lexmesh.control.{job.job_id}.cancel", body, timeout=5)
            job.cancel_reply = reply.data.decode("utf-8", "replace")
        except Exception as e:  # noqa: BLE001 - the job may have ended meanwhile
            job.cancel_reply = f"no reply: {type(e).__name__}"

    async def run(self, jobs: list) -> None:
        window = asyncio.Semaphore(self.args.window)
        self.answered = 0
        self.started = time.monotonic()
        tasks = []
        for job in jobs:
            await window.acquire()
            tasks.append(asyncio.create_task(self.drive(job, window)))
        await asyncio.gather(*tasks)
        say(f"all {len(jobs)} messages answered or timed out "
            f"({time.monotonic() - self.started:.1f} s)")
        await self.wait_final([j for j in jobs if j.accepted])

    async def wait_final(self, accepted: list) -> None:
        pending = [j for j in accepted if j.final is None]
        if not pending:
            return
        say(f"waiting up to {FINAL_ALLOWANCE_S:.0f} s for {len(pending)} cancelled jobs to end")
        try:
            await asyncio.wait_for(
                asyncio.gather(*(j.ended.wait() for j in pending)), FINAL_ALLOWANCE_S
            )
        except asyncio.TimeoutError:
            pass

    async def close(self) -> None:
        if self.nc is not None and self.nc.is_connected:
            try:
                await self.nc.drain()
            except Exception:  # noqa: BLE001
                await self.nc.close()


def deepest(errors: list) -> Any:
    """The most specific of the validation errors (through `oneOf` branches): the one deepest in
    the event, which for a `oneOf` by `"event"` is the one in the branch of that event."""

    def leaf(error: Any) -> Any:
        if not error.context:
            return error
        if all(e.validator == "const" and e.absolute_path == error.absolute_path
               for e in error.context):
            return error  # a value that is none of a list of names: say so, not "X expected"
        return max((leaf(e) for e in error.context), key=lambda e: len(e.absolute_path))

    return max((leaf(e) for e in errors), key=lambda e: len(e.absolute_path))


class RunError(Exception):
    """The run cannot be made (exit status 2): not the service's fault."""


# --------------------------------------------------------------------------------------------
# Judging


def describe(event: Optional[dict], subject: str, problem: Optional[str]) -> str:
    if not isinstance(event, dict):
        return f"<{subject}: {problem}>"
    name = event.get("event", "?")
    if name == "failed":
        text = (
            f"failed({event.get('code')}, retrying={str(event.get('retrying')).lower()}: "
            f"{shorten(str(event.get('reason')), 160)!r})"
        )
    elif name == "progress":
        text = f"progress({event.get('phase')})"
    elif name in ("accepted", "completed", "cancelled"):
        text = name
    else:
        text = repr(name)
    if problem:
        text += f" <{problem}>"
    return text


def judge(job: Job, timeout: float) -> tuple[str, Optional[str]]:
    """(outcome, violation): outcome is `accepted`, `completed`, `rejected:<code>` or
    `violation:<what>`; violation explains it."""
    bad = [p for _, _, p in job.events if p]
    if job.publish_error:
        return "violation:publish", job.publish_error
    if bad:
        return "violation:event_shape", f"an event does not match the schema: {bad[0]}"
    first = job.decisive
    if first is None:
        return "violation:timeout", (
            f"no accepted, completed or final failed event within {timeout:.0f} s"
        )
    name = first.get("event")
    if name in ("accepted", "completed"):
        for event, _, _ in job.events:
            if (
                isinstance(event, dict)
                and event.get("event") == "failed"
                and event.get("code") in CHECKED_BEFORE_ACCEPTED
            ):
                return f"violation:late_{event.get('code')}", (
                    f"failed with {event.get('code')} after it was accepted "
                    "(data checks belong before accepted)"
                )
        return ("accepted" if name == "accepted" else "completed"), None
    if name == "failed":
        code = first.get("code")
        if code in ALLOWED_BEFORE_ACCEPTED[job.kind]:
            return f"rejected:{code}", None
        return f"violation:{code}", f"rejected with {code}, which is not a data-dependent code"
    return f"violation:{name}", f"{name} before it was accepted (it was never cancelled)"


def report(jobs: list, mesh: Mesh, args: argparse.Namespace, seconds: float) -> int:
    per_kind: dict = {}
    violations = 0
    for kind in args.kinds:
        per_kind[kind] = {
            "sent": 0,
            "real_refs": 0,
            "accepted": 0,
            "completed": 0,
            "rejected": Counter(),
            "violations": 0,
            "violation_codes": Counter(),
            "unfinished": 0,
            "after_accepted": Counter(),
        }
    unfinished = []
    for job in jobs:
        row = per_kind[job.kind]
        row["sent"] += 1
        row["real_refs"] += job.real
        outcome, why = judge(job, args.timeout)
        if outcome.startswith("rejected:"):
            row["rejected"][outcome.split(":", 1)[1]] += 1
        elif outcome.startswith("violation:"):
            row["violations"] += 1
            row["violation_codes"][outcome.split(":", 1)[1]] += 1
            violations += 1
            events = " ".join(describe(*e) for e in job.events) or "(none)"
            real = "real refs" if job.real else "generated refs"
            print(f"VIOLATION {job.job_id} ({job.kind}, {real}): {why}")
            print(f"  message: {shorten(job.payload.decode('utf-8'))}")
            print(f"  events:  {events}")
            if job.cancel_reply is not None:
                print(f"  cancel:  {shorten(job.cancel_reply, 200)}")
        else:
            row[outcome] += 1
        if job.accepted and job.final is None:
            row["unfinished"] += 1
            unfinished.append(job.job_id)
        if job.accepted:
            final = job.final or {}
            end = final.get("event", "no final event")
            row["after_accepted"][f"failed:{final.get('code')}" if end == "failed" else end] += 1
    for kind, row in per_kind.items():
        row["rejected"] = dict(sorted(row["rejected"].items()))
        row["violation_codes"] = dict(sorted(row["violation_codes"].items()))
        row["after_accepted"] = dict(sorted(row["after_accepted"].items()))
    if unfinished:
        say(
            f"warning: {len(unfinished)} accepted job(s) had no final event within "
            f"{FINAL_ALLOWANCE_S:.0f} s of the cancel: {', '.join(unfinished[:10])}"
        )
    if mesh.unattributed:
        say(f"note: {len(mesh.unattributed)} failed event(s) named no job (seq-<n>):")
        for body in mesh.unattributed[:5]:
            say(f"  {shorten(body)}")
    summary = {
        "seed": args.seed,
        "per_kind": args.per_kind,
        "seconds": round(seconds, 1),
        "violations": violations,
        "kinds": per_kind,
    }
    print(json.dumps(summary, ensure_ascii=False), flush=True)
    return 1 if violations else 0


# --------------------------------------------------------------------------------------------


def parse_args(argv: list) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Publish schema-valid job messages and check the mesh's answers "
        "(see the docstring at the top of this file)."
    )
    parser.add_argument("--nats", help="NATS URL of a running mesh (not needed with --dry-run)")
    parser.add_argument("--per-kind", type=int, required=True, help="messages per job kind")
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help=f"comma-separated (default {','.join(KINDS)})"
    )
    parser.add_argument("--schemas", default=str(ROOT / "schemas"), help="schema folder")
    parser.add_argument("--data", default=str(ROOT / "data" / "sample"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per message to its outcome (60)"
    )
    parser.add_argument(
        "--window", type=int, default=4, help="messages awaiting their outcome at once (4)"
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=60.0, help="seconds to wait for the mesh (60)"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="only generate and validate the messages; print counts, use no NATS",
    )
    args = parser.parse_args(argv)
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown or not args.kinds:
        parser.error(f"unknown kind(s) {unknown}; choose from {', '.join(KINDS)}")
    if args.per_kind < 1 or args.window < 1 or args.seed < 0:
        parser.error("--per-kind and --window must be at least 1, --seed not negative")
    if not args.dry_run and not args.nats:
        parser.error("--nats URL is required (or --dry-run)")
    return args


async def live(args: argparse.Namespace, schemas: dict, drawn: dict, event_schema: dict) -> int:
    started = time.monotonic()
    mesh = Mesh(args, event_schema)
    try:
        await mesh.connect()
        await mesh.wait_ready()
        await mesh.check_fresh()
        say("set-up: uploading the sample data, running the set-up jobs")
        refs = await mesh.setup(args.kinds)
        say(f"set-up done ({time.monotonic() - started:.1f} s): model {refs.model_id}, "
            f"prepared dataset {refs.dataset_id}")
        jobs, stats = build_jobs(args, schemas, drawn, refs)
        for kind, row in stats.items():
            say(f"{kind}: datasets {row['datasets']}, {row['real_refs']} with real references")
        await mesh.run(jobs)
    except RunError as e:
        say(f"cannot run: {e}")
        await mesh.close()
        return 2
    await mesh.close()
    return report(jobs, mesh, args, time.monotonic() - started)


def main(argv: list) -> int:
    args = parse_args(argv)
    schemas_dir = Path(args.schemas)
    try:
        schemas = {k: load_schema(schemas_dir, f"{k}-job") for k in args.kinds}
        event_schema = load_schema(schemas_dir, "job-event")
    except (OSError, ValueError) as e:
        say(f"cannot read the schemas in {schemas_dir}: {e}")
        return 2
    started = time.monotonic()
    try:
        drawn, stats = draw_all(args, schemas)
    except RunError as e:
        say(f"cannot run: {e}")
        return 2
    for kind, row in stats.items():
        say(f"{kind}: {row['generated']} messages drawn and schema-checked in "
            f"{row['generation_s']} s")
    say(f"every kind drawn in {time.monotonic() - started:.1f} s")
    if not args.dry_run:
        return asyncio.run(live(args, schemas, drawn, event_schema))
    placeholder = Refs(f"pc-setup-model-{args.seed}", TRAIN_KEY, VALIDATION_KEY, "dry-run")
    jobs, more = build_jobs(args, schemas, drawn, placeholder)
    for kind in stats:
        stats[kind].update(more[kind])
    for job in jobs[:: max(1, len(jobs) // 4)][:4]:
        say(f"sample {job.job_id}: {shorten(job.payload.decode('utf-8'))}")
    digest = hashlib.sha256(b"\n".join(j.payload for j in jobs)).hexdigest()[:16]
    summary = {
        "dry_run": True,
        "seed": args.seed,
        "per_kind": args.per_kind,
        "digest": digest,
        "seconds": round(time.monotonic() - started, 1),
        "kinds": stats,
    }
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
