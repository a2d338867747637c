"""The load run of the reliability issue, against a running local stack.

1. The segmenter alone: N requests of the same image straight to `POST /invocations`, with as
   many in flight as the segmenter admits per model (its QUEUE_DEPTH, default 4): what the
   engine sustains on this machine, in images per minute.
2. The whole system: N jobs of that image through `POST /v1/jobs` (multipart) from T client
   threads. A 429 or 503 is retried after its `Retry-After` with the same Idempotency-Key, as a
   well-behaved client does. Then the caller's jobs are listed, a page at a time, until every
   one has ended.

It prints each phase's throughput, the ratio, and every job's end state; it exits 1 when any
job did not succeed (none may be lost, stuck or failed). Used by `scripts/load-test.sh`.

For each phase it also prints where the machine's CPU time went, per process name (the
segmenter, moto, the local runner, this client, everything else), from /proc: the system
phase shares the same cores between the segmenter and the rest of the stack, so the ratio of
throughputs is bounded by the share of CPU the segmenter gets.
"""

import argparse
import concurrent.futures as cf
import datetime
import io
import json
import os
import re
import statistics
import sys
import threading
import time
import uuid

import requests
from PIL import Image


def cpu_seconds():
    """CPU seconds (user + system) used so far by each running process, grouped by a short name,
    and the machine's total busy seconds (from /proc/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    groups = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        secs = (int(fields[11]) + int(fields[12])) / tick
        if "moto_server" in cmd:
            name = "moto"
        elif "imagejobs-local" in cmd:
            name = "runner (API, processor, ingest)"
        elif "segmenter" in cmd.split(" ")[0]:
            name = "segmenter"
        elif int(pid) == os.getpid():
            name = "load client"
        else:
            name = "other"
        groups[name] = groups.get(name, 0.0) + secs
    with open("/proc/stat") as f:
        cpu = [int(v) for v in f.readline().split()[1:]]
    busy = (sum(cpu) - cpu[3] - cpu[4]) / tick  # all but idle and iowait
    return groups, busy


def cpu_report(label, before, after, wall):
    """Prints the CPU seconds each group used between two `cpu_seconds()` samples, and returns
    {group: seconds}."""
    (g0, b0), (g1, b1) = before, after
    used = {k: g1.get(k, 0.0) - g0.get(k, 0.0) for k in g1}
    cores = os.cpu_count()
    print(f"CPU during {label}: {b1 - b0:.1f} s busy of {wall * cores:.1f} s ({cores} cores x {wall:.1f} s); "
          + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(used.items(), key=lambda kv: -kv[1]) if v >= 0.05))
    return used


def sample_png(path, width, height):
    """The sample photo resized to width × height, as PNG bytes."""
    with Image.open(path) as im:
        out = io.BytesIO()
        im.convert("RGB").resize((width, height), Image.LANCZOS).save(out, "PNG")
        return out.getvalue()


def segmenter_alone(url, model, image, count, in_flight):
    """Images per minute the segmenter sustains with `in_flight` requests at a time."""
    def one(_):
        started = time.monotonic()
        while True:
            r = requests.post(
                f"{url}/invocations",
                params={"model": model},
                data=image,
                headers={"Content-Type": "image/png"},
                timeout=120,
            )
            if r.status_code == 503:
                time.sleep(0.05)
                continue
            r.raise_for_status()
            return time.monotonic() - started

    started = time.monotonic()
    with cf.ThreadPoolExecutor(in_flight) as pool:
        latencies = list(pool.map(one, range(count)))
    wall = time.monotonic() - started
    return count / wall * 60, wall, statistics.median(latencies)


def submit(api, key, model, image, stats, lock):
    """Creates one job, retrying 429/503 with the same Idempotency-Key; returns its id."""
    idem = str(uuid.uuid4())
    while True:
        r = requests.post(
            f"{api}/v1/jobs",
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idem},
            files={"file": ("photo.png", image, "image/png")},
            data={"model": model},
            timeout=60,
        )
        if r.status_code in (429, 503):
            with lock:
                stats[r.status_code] = stats.get(r.status_code, 0) + 1
            time.sleep(min(float(r.headers.get("Retry-After", "1")), 5.0))
            continue
        if r.status_code not in (200, 201, 202):
            raise RuntimeError(f"create answered {r.status_code}: {r.text[:300]}")
        return r.json()["id"]


def wait_all(api, key, ids, timeout, first_look):
    """Lists the caller's jobs (`GET /v1/jobs`, 100 a page, newest first) from `first_look`
    (a `time.monotonic()` value) on, every 2 s, until every job of `ids` has ended or `timeout`
    seconds pass; returns ({id: job}, ids not ended).

    A client waiting on a batch reads pages of its jobs, not each job in turn: reading 120 jobs
    one by one every half second was most of the emulator's calls in this run, on the cores
    the segmenter shares. How often and from when it reads does not change the figures, only
    what the watching costs the run: the run's end is the last job's own `finished_at` (see
    `finished_epoch`)."""
    deadline = time.monotonic() + timeout
    jobs = {}
    pending = set(ids)
    time.sleep(max(0.0, first_look - time.monotonic()))
    while pending and time.monotonic() < deadline:
        unseen, cursor = set(pending), None
        while unseen:
            r = requests.get(
                f"{api}/v1/jobs",
                params={"limit": 100, **({"cursor": cursor} if cursor else {})},
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            if r.status_code != 200:
                break
            page = r.json()
            for job in page["jobs"]:
                if job["id"] in unseen:
                    unseen.discard(job["id"])
                    jobs[job["id"]] = job
                    if job["status"] in ("succeeded", "failed", "canceled"):
                        pending.discard(job["id"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
        if pending:
            time.sleep(2.0)
    return jobs, pending


def finished_epoch(job):
    """A job's `finished_at` (RFC 3339, UTC) in seconds since the epoch."""
    stamp = re.sub(r"(\.\d{6})\d+", r"\1", job["finished_at"]).replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(stamp).timestamp()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--api", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--segmenter", required=True)
    p.add_argument("--photo", required=True)
    p.add_argument("--model", default="u2netp")
    p.add_argument("--jobs", type=int, default=120)
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--segmenter-in-flight", type=int, default=4)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args()

    image = sample_png(a.photo, 400, 328)
    print(f"image: 400x328 PNG, {len(image)} bytes; model {a.model}")

    cpu0 = cpu_seconds()
    alone_per_min, alone_wall, alone_median = segmenter_alone(
        a.segmenter, a.model, image, a.jobs, a.segmenter_in_flight
    )
    print(
        f"segmenter alone: {a.jobs} images in {alone_wall:.1f} s, {a.segmenter_in_flight} in flight: "
        f"{alone_per_min:.0f}/min (median latency {alone_median * 1000:.0f} ms)"
    )
    cpu_alone = cpu_report("the segmenter alone", cpu0, cpu_seconds(), alone_wall)
    cpu1 = cpu_seconds()

    stats, lock = {}, threading.Lock()
    started, started_epoch = time.monotonic(), time.time()
    with cf.ThreadPoolExecutor(a.threads) as pool:
        futures = [
            pool.submit(submit, a.api, a.key, a.model, image, stats, lock)
            for _ in range(a.jobs)
        ]
        ids = [f.result() for f in futures]
    accepted = time.monotonic() - started
    # The jobs cannot all have ended before the segmenter alone would have done them: each
    # listing costs the emulator CPU on the cores the run shares, so the first one waits.
    jobs, pending = wait_all(a.api, a.key, ids, a.timeout, started + alone_wall)
    seen = time.monotonic() - started
    # The run ends when its last job did, by the job's own clock (the same machine's).
    ended = [finished_epoch(j) for j in jobs.values() if j.get("finished_at")]
    wall = max(ended) - started_epoch if ended and not pending else seen
    cpu_system = cpu_report("the system run", cpu1, cpu_seconds(), seen)
    by_status = {}
    for job in jobs.values():
        by_status[job["status"]] = by_status.get(job["status"], 0) + 1
    attempts = [job.get("attempts", 0) for job in jobs.values()]
    succeeded = by_status.get("succeeded", 0)
    per_min = succeeded / wall * 60
    ratio = per_min / alone_per_min
    print(
        f"system: {len(ids)} of {a.jobs} accepted in {accepted:.1f} s "
        f"(retried: {stats.get(429, 0)}x 429, {stats.get(503, 0)}x 503); all ended after {wall:.1f} s "
        f"(the last one's finished_at; seen ended after {seen:.1f} s)"
    )
    print(f"end states: {json.dumps(by_status, sort_keys=True)}; not ended: {len(pending)}")
    print(f"attempts per job: max {max(attempts, default=0)}, total {sum(attempts)}")
    print(f"throughput: {per_min:.0f}/min = {ratio:.0%} of the segmenter alone")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                {
                    "jobs": a.jobs,
                    "threads": a.threads,
                    "model": a.model,
                    "segmenter_alone_per_min": alone_per_min,
                    "segmenter_alone_median_ms": alone_median * 1000,
                    "system_per_min": per_min,
                    "ratio": ratio,
                    "wall_s": wall,
                    "wall_seen_s": seen,
                    "end_states": by_status,
                    "not_ended": len(pending),
                    "retried_429": stats.get(429, 0),
                    "retried_503": stats.get(503, 0),
                    "max_attempts": max(attempts, default=0),
                    "cpu_seconds_segmenter_alone": cpu_alone,
                    "cpu_seconds_system": cpu_system,
                },
                f,
                indent=2,
            )
    ok = succeeded == a.jobs and not pending
    if not ok:
        for job_id in sorted(pending):
            print(f"not ended: {job_id}: {jobs.get(job_id, {}).get('status')}", file=sys.stderr)
        for job in jobs.values():
            if job["status"] != "succeeded":
                print(f"{job['id']}: {job['status']} {job.get('error')}", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
