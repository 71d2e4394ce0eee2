"""A headless Chromium for the dashboard tests, driven by JSON lines on stdin.

Started by tests/console.rs (and benches/console.rs) from the virtualenv that
scripts/setup-browser-tests makes: Playwright's Python package driving Debian's chromium
(Playwright's own browser downloads are not used). Each line on stdin is one command; each
answer is one JSON line on stdout: {"ok": true, "value": ...} or {"ok": false, "error": "..."}.

Commands:
  {"op": "open", "url": U, "width": W, "height": H}   a fresh profile, the page at U
  {"op": "wait", "js": F, "timeout_s": T}  until the function F returns a truthy value (its value)
  {"op": "eval", "js": F}                  F's value now
  {"op": "click", "selector": S}
  {"op": "viewport", "width": W, "height": H}
  {"op": "screenshot", "path": P}
  {"op": "close"}
"""

import json
import os
import sys
import tempfile

from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("LEXMESH_CHROMIUM", "/usr/bin/chromium")
# What a closed network needs: no sandbox (containers), no GPU, nothing that phones home.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def answer(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def main():
    with sync_playwright() as playwright:
        context = None
        page = None
        console_lines = []
        for line in sys.stdin:
            if not line.strip():
                continue
            command = json.loads(line)
            op = command["op"]
            try:
                if op == "open":
                    context = playwright.chromium.launch_persistent_context(
                        tempfile.mkdtemp(prefix="lexmesh-chromium-"),
                        executable_path=CHROMIUM,
                        headless=True,
                        args=ARGS,
                        viewport={"width": command.get("width", 1280), "height": command.get("height", 800)},
                    )
                    page = context.new_page()
                    page.on("console", lambda m: console_lines.append(f"{m.type}: {m.text}"))
                    page.on("pageerror", lambda e: console_lines.append(f"pageerror: {e}"))
                    page.goto(command["url"])
                    answer(ok=True, value=None)
                elif op == "wait":
                    handle = page.wait_for_function(
                        command["js"], timeout=command.get("timeout_s", 30) * 1000, polling=100
                    )
                    answer(ok=True, value=handle.json_value())
                elif op == "eval":
                    answer(ok=True, value=page.evaluate(command["js"]))
                elif op == "click":
                    page.click(command["selector"])
                    answer(ok=True, value=None)
                elif op == "viewport":
                    page.set_viewport_size({"width": command["width"], "height": command["height"]})
                    answer(ok=True, value=None)
                elif op == "screenshot":
                    page.screenshot(path=command["path"], full_page=True)
                    answer(ok=True, value=None)
                elif op == "close":
                    if context is not None:
                        context.close()
                    answer(ok=True, value=None)
                    return
                else:
                    answer(ok=False, error=f"unknown op {op}")
            except Exception as error:  # reported to the test, which fails with it
                answer(ok=False, error=f"{type(error).__name__}: {error}", console=console_lines[-30:])


if __name__ == "__main__":
    main()
