"""Side-by-side benchmark: rembg's remove() against the segmenter's POST /invocations, on the
same real photo upscaled to 12 MP, with the same ONNX files and the same ONNX Runtime version.

Run it through ``scripts/bench-segmenter.sh`` (which builds the release segmenter, installs rembg
into ``.venv-bench`` and fetches the weights); the flags below are passed through.

What it measures, in one run, the two sides interleaved (rembg, segmenter, rembg, …) so that any
load on the machine hits both alike:

* end-to-end time per request: rembg ``remove(bytes, session=reused)`` (decode, EXIF, mask,
  cutout, PNG) against one HTTP round trip to the segmenter (same work, plus loopback HTTP);
  median, p90 and the ratio of medians;
* output sizes, and the size PIL's default PNG encoder (zlib level 6, the encoder rembg uses)
  gives for the segmenter's own pixels, so the encoders are compared on equal pixels;
* peak memory per request: the server's peak RSS during the request over its idle RSS (the
  kernel's high-water mark, reset through ``/proc/PID/clear_refs`` before each request), and
  the same for the rembg process (plus its absolute peak). The segmenter keeps memory freed
  after a request for the next one (its allocator settings), so from the second request on its
  figure counts only what a request needs beyond that; the RSS after the run says what the
  process holds in the end;
* the segmenter's per-stage breakdown from its ``Server-Timing`` response header;
* the mask check: the segmenter's ``only_mask`` output against reference masks saved earlier
  (``--save-reference``), as mean and max absolute difference in 1/255 steps;
* optionally (``--ort-settings``) inference alone under several ONNX Runtime session settings;
* the 1-minute load average before and after.

Everything binds to 127.0.0.1; the server is started by this script and killed by its PID.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]

# The two models of the issue: the segmenter's name, rembg's session and its input side.
MODELS = {
    "u2netp": {"file": "u2netp.onnx", "side": 320},
    "isnet": {"file": "isnet.onnx", "side": 1024},
}
# rembg pins u2netp.onnx by this md5 (rembg/sessions/u2netp.py); with the file under U2NET_HOME
# and this checksum, rembg uses it as is and never downloads.
REMBG_U2NETP_MD5 = "8e83ca70e441ab06c318d82300c84806"
STAGES = ["decode", "preprocess", "inference", "mask_resize", "compose", "encode"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def make_photo(sample: Path, dest: Path, width: int, height: int) -> bytes:
    """The sample photo upscaled (Lanczos) to width × height, JPEG quality 95; cached."""
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        img = Image.open(sample).convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
        img.save(dest, "JPEG", quality=95)
    return dest.read_bytes()


# ---------------------------------------------------------------- memory (Linux /proc)

def rss_kb(pid: int | str, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def reset_peak(pid: int | str) -> bool:
    """Resets the process's peak RSS (VmHWM) to its current RSS (Linux ≥ 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- the segmenter server

class Server:
    """The release segmenter on a free 127.0.0.1 port; stopped by PID."""

    def __init__(self, binary: Path, model_dir: Path, ort_lib: Path, log_path: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = dict(os.environ)
        env.update(
            HOST="127.0.0.1",
            PORT=str(self.port),
            MODEL_DIR=str(model_dir),
            ORT_DYLIB_PATH=str(ort_lib),
            RUST_LOG=env.get("RUST_LOG", "warn"),
        )
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([str(binary)], env=env, stdout=self.log, stderr=self.log)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"segmenter exited with {self.proc.returncode}; see {log_path}")
            try:
                status, _, body = self.request("GET", "/ping")
                if status == 200:
                    self.models = json.loads(body)["models"]
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("segmenter did not answer /ping within 120 s")

    def request(self, method: str, path: str, body: bytes | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        try:
            conn.request(method, path, body=body)
            res = conn.getresponse()
            return res.status, dict(res.getheaders()), res.read()
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def server_timing(header: str) -> dict[str, float]:
    """``Server-Timing: decode;dur=61.2, preprocess;dur=3.1, …`` → {name: ms}."""
    out = {}
    for part in header.split(","):
        fields = [f.strip() for f in part.split(";")]
        for f in fields[1:]:
            if f.startswith("dur="):
                out[fields[0]] = float(f[4:])
    return out


# ---------------------------------------------------------------- statistics

def pct(values: list[float], q: float) -> float:
    xs = sorted(values)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def mask_diff(a: Image.Image, b: Image.Image) -> tuple[float, int]:
    x = np.asarray(a.convert("L"), dtype=np.int16)
    y = np.asarray(b.convert("L"), dtype=np.int16)
    if x.shape != y.shape:
        raise ValueError(f"mask sizes differ: {x.shape} vs {y.shape}")
    d = np.abs(x - y)
    return float(d.mean()), int(d.max())


# ---------------------------------------------------------------- ONNX Runtime settings

def ort_settings_table(model_dir: Path, models: list[str], repeats: int) -> list[dict]:
    """Inference alone (the same random-free input: the photo's preprocessed tensor is not
    needed, a constant tensor costs the same) under several session settings."""
    configs = [
        ("default (all opts, intra=auto, arena, mem pattern)", {}),
        ("graph opt: basic", {"opt": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}),
        ("graph opt: extended", {"opt": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}),
        ("graph opt: disabled", {"opt": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}),
        ("intra threads 1", {"intra": 1}),
        ("intra threads 2", {"intra": 2}),
        ("intra threads 4", {"intra": 4}),
        ("cpu mem arena off", {"arena": False}),
        ("mem pattern off", {"pattern": False}),
        ("parallel executor, inter 2", {"parallel": True}),
        ("intra-op spinning off", {"spin": False}),
    ]
    rows = []
    for name in models:
        path = model_dir / MODELS[name]["file"]
        side = MODELS[name]["side"]
        x = np.random.default_rng(7).standard_normal((1, 3, side, side)).astype(np.float32)
        for label, c in configs:
            so = ort.SessionOptions()
            so.graph_optimization_level = c.get("opt", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
            if "intra" in c:
                so.intra_op_num_threads = c["intra"]
            so.enable_cpu_mem_arena = c.get("arena", True)
            so.enable_mem_pattern = c.get("pattern", True)
            if c.get("spin") is False:
                so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            if c.get("parallel"):
                so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
                so.inter_op_num_threads = 2
            t0 = time.perf_counter()
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            load_ms = (time.perf_counter() - t0) * 1e3
            feed = {sess.get_inputs()[0].name: x}
            sess.run(None, feed)  # warm-up
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                sess.run(None, feed)
                times.append((time.perf_counter() - t) * 1e3)
            rows.append({"model": name, "setting": label, "median_ms": statistics.median(times),
                         "min_ms": min(times), "load_ms": load_ms})
            log(f"  ort {name:7} {label:52} median {statistics.median(times):8.1f} ms")
            del sess
    return rows


# ---------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segmenter", type=Path, required=True, help="release segmenter binary")
    ap.add_argument("--model-dir", type=Path, default=ROOT / ".local/models")
    ap.add_argument("--sample", type=Path, default=ROOT / "assets/sample-rocket.jpg")
    ap.add_argument("--work-dir", type=Path, default=ROOT / ".local/bench")
    ap.add_argument("--models", default="u2netp,isnet")
    ap.add_argument("--repeats", type=int, default=9, help="timed requests per side and model")
    ap.add_argument("--width", type=int, default=4242)
    ap.add_argument("--height", type=int, default=2862)
    ap.add_argument("--save-reference", action="store_true",
                    help="write the segmenter's masks as the reference for later mask checks")
    ap.add_argument("--ort-settings", action="store_true",
                    help="also time inference alone under several ONNX Runtime settings")
    ap.add_argument("--ort-repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in MODELS:
            ap.error(f"unknown model {m}; one of {', '.join(MODELS)}")
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    log(f"load average (1 min) at start: {load_before:.2f}")

    photo_path = work / f"rocket-{args.width}x{args.height}.jpg"
    photo = make_photo(args.sample, photo_path, args.width, args.height)
    log(f"photo: {photo_path} ({len(photo)} bytes, {args.width}x{args.height})")

    # One folder with only the benchmarked weights (symlinks), so the server holds just these
    # sessions, and rembg's u2netp session finds its file under U2NET_HOME.
    bench_models = work / "models"
    bench_models.mkdir(exist_ok=True)
    for m in models:
        src = (args.model_dir / MODELS[m]["file"]).resolve()
        if not src.is_file():
            sys.exit(f"{src} missing: run python3 scripts/fetch_models.py")
        link = bench_models / MODELS[m]["file"]
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(src)
    if "u2netp" in models:
        md5 = digest(bench_models / "u2netp.onnx", "md5")
        if md5 != REMBG_U2NETP_MD5:
            sys.exit(f"u2netp.onnx md5 {md5} is not the file rembg pins ({REMBG_U2NETP_MD5})")
    weights = {m: digest(bench_models / MODELS[m]["file"], "sha256") for m in models}
    for m, h in weights.items():
        log(f"weights {m}: sha256 {h} (the same file for both sides)")

    os.environ["U2NET_HOME"] = str(bench_models)
    from rembg import new_session, remove  # after U2NET_HOME is set

    ort_lib = Path(ort.__file__).parent / "capi" / f"libonnxruntime.so.{ort.__version__}"
    if not ort_lib.is_file():
        sys.exit(f"{ort_lib} missing")
    sessions = {}
    for m in models:
        if m == "u2netp":
            sessions[m] = new_session("u2netp")
        else:
            sessions[m] = new_session("dis_custom", model_path=str(bench_models / MODELS[m]["file"]))

    server = Server(args.segmenter, bench_models, ort_lib, work / "segmenter.log")
    results: dict = {"load_avg_start": load_before, "photo": str(photo_path),
                     "width": args.width, "height": args.height, "onnxruntime": ort.__version__,
                     "repeats": args.repeats, "models": {}}
    try:
        server_pid = server.proc.pid
        log(f"segmenter pid {server_pid} on 127.0.0.1:{server.port}, models {server.models}")
        can_reset = reset_peak(server_pid) and reset_peak("self")

        def call_server(m: str, extra: str = ""):
            return server.request("POST", f"/invocations?model={m}{extra}", photo)

        # Masks: today's reference, or the check against it.
        ref_dir = work / "reference"
        mask_report = {}
        for m in models:
            status, headers, body = call_server(m, "&only_mask=true")
            if status != 200:
                sys.exit(f"mask request for {m}: {status} {body[:300]!r}")
            ours = Image.open(io.BytesIO(body))
            ref = ref_dir / f"{m}-mask.png"
            rembg_mask = sessions[m].predict(Image.open(io.BytesIO(photo)).convert("RGB"))[0]
            vs_rembg = mask_diff(ours, rembg_mask)
            if args.save_reference:
                ref_dir.mkdir(exist_ok=True)
                ours.save(ref)
                mask_report[m] = {"reference": "saved", "vs_rembg": vs_rembg}
            elif ref.exists():
                mask_report[m] = {"vs_reference": mask_diff(ours, Image.open(ref)),
                                  "vs_rembg": vs_rembg}
            else:
                mask_report[m] = {"vs_reference": None, "vs_rembg": vs_rembg}

        for m in models:
            # Warm-up: one of each (first-run allocations, page faults of the weights).
            remove(photo, session=sessions[m])
            call_server(m)
            rembg_ms, ours_ms, stages = [], [], {s: [] for s in STAGES + ["total"]}
            server_peak, rembg_peak, rembg_abs = [], [], []
            rembg_png = ours_png = b""
            for i in range(args.repeats):
                log(f"  {m} round {i + 1}/{args.repeats}")
                # Alternate who goes first, so drift in load is shared evenly.
                order = ("rembg", "ours") if i % 2 == 0 else ("ours", "rembg")
                for side in order:
                    if side == "rembg":
                        before = rss_kb("self", "VmRSS")
                        reset_peak("self")
                        t = time.perf_counter()
                        rembg_png = remove(photo, session=sessions[m])
                        rembg_ms.append((time.perf_counter() - t) * 1e3)
                        peak = rss_kb("self", "VmHWM")
                        rembg_peak.append((peak - before) * 1024)
                        rembg_abs.append(peak * 1024)
                    else:
                        idle = rss_kb(server_pid, "VmRSS")
                        reset_peak(server_pid)
                        t = time.perf_counter()
                        status, headers, body = call_server(m)
                        ours_ms.append((time.perf_counter() - t) * 1e3)
                        if status != 200:
                            sys.exit(f"{m}: {status} {body[:300]!r}")
                        server_peak.append((rss_kb(server_pid, "VmHWM") - idle) * 1024)
                        ours_png = body
                        timing = server_timing({k.lower(): v for k, v in headers.items()}.get("server-timing", ""))
                        for s in stages:
                            stages[s].append(timing.get(s, float("nan")))
            ours_img = Image.open(io.BytesIO(ours_png))
            pil_buf = io.BytesIO()
            ours_img.save(pil_buf, "PNG")
            (work / f"{m}-segmenter.png").write_bytes(ours_png)
            (work / f"{m}-rembg.png").write_bytes(rembg_png)
            results["models"][m] = {
                "rembg_ms": rembg_ms, "segmenter_ms": ours_ms,
                "rembg_median_ms": statistics.median(rembg_ms),
                "rembg_p90_ms": pct(rembg_ms, 0.9),
                "segmenter_median_ms": statistics.median(ours_ms),
                "segmenter_p90_ms": pct(ours_ms, 0.9),
                "speedup": statistics.median(rembg_ms) / statistics.median(ours_ms),
                "stages_median_ms": {s: statistics.median(v) for s, v in stages.items()},
                "png_bytes": {"rembg": len(rembg_png), "segmenter": len(ours_png),
                              "pil_level6_of_segmenter_pixels": len(pil_buf.getvalue())},
                "peak_bytes_per_request": {
                    "segmenter": max(server_peak) if can_reset else None,
                    "rembg": max(rembg_peak) if can_reset else None,
                },
                "rembg_process_peak_bytes": max(rembg_abs),
                "server_rss_bytes": rss_kb(server_pid, "VmRSS") * 1024,
                "mask": mask_report[m],
            }
    finally:
        server.stop()

    if args.ort_settings:
        log("ONNX Runtime settings (inference only, Python onnxruntime, same library):")
        results["ort_settings"] = ort_settings_table(bench_models, models, args.ort_repeats)
    results["load_avg_end"] = os.getloadavg()[0]
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def report(r: dict) -> None:
    print(f"\n12 MP JPEG {r['width']}x{r['height']} -> PNG cutout, onnxruntime {r['onnxruntime']}, "
          f"{r['repeats']} interleaved requests per side, {os.cpu_count()} CPUs; "
          f"load average (1 min) {r['load_avg_start']:.2f} at start, {r['load_avg_end']:.2f} at end\n")
    print("| model | rembg median (p90) | segmenter median (p90) | speed-up | "
          "PNG rembg / ours / PIL-6 of ours | peak per request rembg / ours |")
    print("|---|---|---|---|---|---|")
    for m, x in r["models"].items():
        png = x["png_bytes"]
        peak = x["peak_bytes_per_request"]
        fmt_peak = lambda v: "n/a" if v is None else f"{v / 1e6:.0f} MB"  # noqa: E731
        print(f"| {m} | {x['rembg_median_ms']:,.0f} ms ({x['rembg_p90_ms']:,.0f}) | "
              f"{x['segmenter_median_ms']:,.0f} ms ({x['segmenter_p90_ms']:,.0f}) | "
              f"{x['speedup']:.2f}x | {mb(png['rembg'])} / {mb(png['segmenter'])} / "
              f"{mb(png['pil_level6_of_segmenter_pixels'])} | "
              f"{fmt_peak(peak['rembg'])} / {fmt_peak(peak['segmenter'])} |")
    print("\nsegmenter stages, median ms (Server-Timing):\n")
    print("| model | " + " | ".join(STAGES) + " | all but inference | total |")
    print("|---" * (len(STAGES) + 3) + "|")
    for m, x in r["models"].items():
        s = x["stages_median_ms"]
        rest = sum(s[k] for k in STAGES if k != "inference")
        print(f"| {m} | " + " | ".join(f"{s[k]:.1f}" for k in STAGES)
              + f" | {rest:.1f} | {s['total']:.1f} |")
    print("\nmasks (mean / max absolute difference, in 1/255 steps):\n")
    for m, x in r["models"].items():
        mk = x["mask"]
        ref = mk.get("vs_reference")
        ref_s = ("saved as the reference" if mk.get("reference") == "saved"
                 else "no reference saved" if ref is None
                 else f"{ref[0]:.3f} / {ref[1]} vs the reference ({'OK' if ref[0] <= 1.0 else 'OVER 1/255'})")
        print(f"- {m}: {ref_s}; {mk['vs_rembg'][0]:.3f} / {mk['vs_rembg'][1]} vs rembg's mask")
    print("\nmemory: rembg process peak "
          + ", ".join(f"{m} {x['rembg_process_peak_bytes'] / 1e6:.0f} MB" for m, x in r["models"].items())
          + f"; segmenter RSS after the run {max(x['server_rss_bytes'] for x in r['models'].values()) / 1e6:.0f} MB"
          f" (models loaded: {', '.join(r['models'])})")
    if "ort_settings" in r:
        print("\nONNX Runtime settings, inference only (median ms; Python onnxruntime, same library):\n")
        print("| setting | " + " | ".join(dict.fromkeys(row["model"] for row in r["ort_settings"])) + " |")
        names = list(dict.fromkeys(row["model"] for row in r["ort_settings"]))
        print("|---" * (len(names) + 1) + "|")
        for label in dict.fromkeys(row["setting"] for row in r["ort_settings"]):
            cells = []
            for n in names:
                row = next(x for x in r["ort_settings"] if x["model"] == n and x["setting"] == label)
                cells.append(f"{row['median_ms']:.1f}")
            print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
