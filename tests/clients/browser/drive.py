"""Drive one page in headless Chromium through a list of steps; print what it saw (JSON).

    python drive.py CHROMIUM MICROPHONE_WAV STEPS_JSON

Run as its own process: Playwright's sync API runs an asyncio loop, which the test
process (where trio-asyncio owns asyncio's loop policy) cannot host. Steps, in order:
``["goto", url]``, ``["click", selector]``, ``["fill", selector, text]``,
``["select", selector, value]``, ``["wait", js_condition, seconds]``,
``["screenshot", path]``, ``["text", selector]`` (its text goes to "texts"),
``["viewport", width, height]``, ``["eval", js]`` (its value goes to "texts"),
``["close"]``. The output: the page's ``window.__remotemedia`` ("seen", read last),
the texts asked for, and every console error and page error ("errors").
"""

from __future__ import annotations

import json
import sys

from playwright.sync_api import sync_playwright


def main() -> None:
    chromium, microphone, steps = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    out: dict = {"texts": {}, "errors": [], "seen": None}
    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=[
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphone}%noloop",
                "--autoplay-policy=no-user-gesture-required",
                # WebRTC on loopback only: Chromium offers no loopback candidate
                # without the first, and hides local addresses behind mDNS names
                # without the second.
                "--allow-loopback-in-peer-connection",
                "--disable-features=WebRtcHideLocalIpsWithMdns",
            ],
        )
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.on("console", lambda m: m.type == "error" and out["errors"].append(m.text))
        page.on("pageerror", lambda error: out["errors"].append(f"pageerror: {error}"))
        for step in steps:
            kind, *args = step
            if kind == "goto":
                page.goto(args[0])
            elif kind == "click":
                page.click(args[0])
            elif kind == "fill":
                page.fill(args[0], args[1])
            elif kind == "select":
                page.select_option(args[0], args[1])
            elif kind == "wait":
                page.wait_for_function(args[0], timeout=args[1] * 1000)
            elif kind == "screenshot":
                page.screenshot(path=args[0])
            elif kind == "text":
                out["texts"][args[0]] = page.inner_text(args[0])
            elif kind == "viewport":
                page.set_viewport_size({"width": args[0], "height": args[1]})
            elif kind == "eval":
                out["texts"][args[0]] = page.evaluate(args[0])
            elif kind == "close":
                out["seen"] = page.evaluate("JSON.stringify(window.__remotemedia)")
                page.close()
                break
        else:
            out["seen"] = page.evaluate("JSON.stringify(window.__remotemedia)")
        browser.close()
    out["seen"] = json.loads(out["seen"]) if out["seen"] else None
    print(json.dumps(out))


if __name__ == "__main__":
    main()
