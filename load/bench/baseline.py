"""Redis CPU per acknowledged gift, an older tree against this one, back to back
(`make bench`, the section "Redis CPU per gift against the baseline").

The baseline is commit 85d365d (2026-11-23), the last commit of the code whose
`make bench-script` counted what the issue "Half the Redis cost per gift" starts from
(341,574 Redis instructions per gift): its own `python -m load.bench.script_cost`
gives 342,203 here, docs/performance.md recorded 343,000. Its `send_gift.lua` is that
of 8c34d73 to 85d365d. The scripts changed next on 2026-11-29 (55841c5: 359,000) and
counted between 351,000 and 386,532 until the levers of 8ec6832 (308,897); 0c3606b,
the baseline of `make bench-script`, counted 377,660.

That tree is exported with `git archive` into a temporary directory and served from
there with this environment's packages (`BenchServer(tree=...)`: PYTHONPATH and the
working directory are the tree's). Then each tree in turn gets the gift path's
end-to-end load (`gifts.end_to_end`): a fresh worker with its embedded Redis pinned to
core 0, the gifters on core 1, the offered rate to one stream. The figure is the
redis-server's `used_cpu_user` + `used_cpu_sys` over the load per acknowledged gift
(`redis_process_us_per_gift`); the ratio is this tree's mean over the baseline's. With
two rounds or more the trees alternate as ABBA, so a drift of the machine's load
weighs on both alike.

    python -m load.bench.baseline [--commit 85d365d] [--rounds 2] [--duration 10] \
        [--gifters 1000] [--rate 2000] [--no-admission] [--current-config TOML]

Standalone, it prints the figures as JSON and rewrites its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import orjson
import redis

from load.bench.fanout import STREAM
from load.bench.gifts import end_to_end, fund_users
from load.bench.server import BenchServer, step
from load.bench.sweep import NO_ADMISSION

ROOT = Path(__file__).resolve().parents[2]
BASELINE_COMMIT = "85d365d"
BASELINE_WHY = (
    " (the code of 2026-11-23, when `make bench-script` counted ~342,000 Redis "
    "instructions per gift)"
)
TARGET_RATIO = 0.5  # the issue "Half the Redis cost per gift"
HEADING = "## Redis CPU per gift against the baseline"
PORT = 8721


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def describe_head() -> str:
    """This tree's commit, and whether its files differ from it."""
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short=7", "HEAD") + (" with uncommitted changes" if dirty else "")


@contextmanager
def exported(commit: str) -> Iterator[Path]:
    """The files of `commit` in a temporary directory, removed afterwards."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=ROOT, capture_output=True, check=True
    ).stdout
    into = Path(tempfile.mkdtemp(prefix="gifting-baseline-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(into, filter="data")
        yield into
    finally:
        shutil.rmtree(into, ignore_errors=True)


def measure(
    tree: Path | None, gifters: int, rate: float, duration: float, extra_config: str = ""
) -> dict[str, Any]:
    """One fresh worker of `tree` (None: this one) under the gift path's load."""
    load_before = os.getloadavg()
    server = BenchServer(PORT, cpu=0, extra_config=extra_config, tree=tree)
    try:
        server.start()
        server.go_live(STREAM)
        users = fund_users(server, gifters)
        client = redis.Redis.from_url(server.redis_url)
        before, totals_before = command_calls(client), redis_totals(client)
        figures = end_to_end(server, users, rate, duration)
        after, totals_after = command_calls(client), redis_totals(client)
        client.close()
    finally:
        server.stop()
    acked = max(figures["gifts_per_s"] * duration, 1)
    figures["script_calls_per_gift"] = round(figures["redis_script_calls"] / acked, 2)
    # Every command Redis ran, those the scripts call included: where two trees differ.
    figures["commands_per_gift"] = {
        name: round((calls - before.get(name, 0)) / acked, 2)
        for name, calls in sorted(after.items(), key=lambda item: before.get(item[0], 0) - item[1])
        if calls > before.get(name, 0)
    }
    figures["redis_per_gift"] = {
        name: round((totals_after[name] - totals_before[name]) / acked, 2) for name in totals_after
    }
    return {**figures, "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip


def command_calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


def redis_totals(client: redis.Redis) -> dict[str, int]:
    """What Redis read from its clients, wrote to them and holds in its AOF (bytes), the
    reads and writes of its clients' sockets, and its CPU in user and kernel mode (µs)."""
    info = client.info()
    return {
        "read": int(info["total_net_input_bytes"]),
        "written": int(info["total_net_output_bytes"]),
        "aof": int(info.get("aof_current_size", 0)),
        # read and write events on its clients' sockets
        "reads_processed": int(info.get("total_reads_processed", 0)),
        "writes_processed": int(info.get("total_writes_processed", 0)),
        "cpu_user_us": int(float(info["used_cpu_user"]) * 1e6),
        "cpu_sys_us": int(float(info["used_cpu_sys"]) * 1e6),
    }


def tree_config(which: str, admission: bool, current_config: str) -> str:
    """The configuration layered over a tree's for its runs: admission as good as off
    for both, or not; `current_config` for this tree alone, since the baseline's
    configuration refuses a setting it does not know."""
    config = "" if admission else NO_ADMISSION
    return config + current_config if which == "current" else config


def order(rounds: int) -> list[str]:
    """ABBA: the baseline, this tree, this tree, the baseline, and so on."""
    pairs = [("baseline", "current"), ("current", "baseline")]
    return [tree for i in range(rounds) for tree in pairs[i % 2]]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def compare(
    commit: str,
    gifters: int,
    rate: float,
    duration: float,
    rounds: int,
    admission: bool = True,
    current_config: str = "",
) -> dict[str, Any]:
    """Both trees measured back to back. When the baseline cannot be exported, started
    or measured, that is recorded (`error`) and this tree's runs go on without it.
    `admission=False`: this tree's admission as good as off (the baseline has none), so
    that both carry the offered rate when the machine is too busy for this one to.
    `current_config`: TOML layered over this tree's configuration alone (a setting the
    baseline does not know would stop it), e.g. another `[redis] gift_batch_window_ms`."""
    results: dict[str, Any] = {
        "load": {
            "gifters": gifters,
            "rate": rate,
            "duration": duration,
            "rounds": rounds,
            "admission": admission,
            "current_config": current_config,
        },
        "target_ratio": TARGET_RATIO,
        "current_commit": describe_head(),
        "runs": [],
    }

    def failed(why: object) -> None:
        results["error"] = f"the baseline tree ({commit}) could not be measured: {why}"
        step(results["error"])

    with ExitStack() as stack:
        tree: Path | None = None
        try:
            results["baseline_commit"] = git("rev-parse", "--short=7", f"{commit}^{{commit}}")
            tree = stack.enter_context(exported(commit))
        except subprocess.CalledProcessError as e:
            stderr = e.stderr.decode() if isinstance(e.stderr, bytes) else e.stderr
            failed(stderr.strip())
        for which in order(rounds):
            if which == "baseline" and tree is None:
                continue
            step(f"{which} tree: {rate:.0f} gifts/s from {gifters} gifters, {duration:.0f} s")
            try:
                extra_config = tree_config(which, admission, current_config)
                run = measure(
                    tree if which == "baseline" else None, gifters, rate, duration, extra_config
                )
            except Exception as e:
                if which == "current":
                    raise
                failed(f"{type(e).__name__}: {e}")
                tree = None
                continue
            results["runs"].append({"tree": which, **run})
    results.setdefault("baseline_commit", commit)
    by_tree = {
        which: [run["redis_process_us_per_gift"] for run in results["runs"] if run["tree"] == which]
        for which in ("baseline", "current")
    }
    for which, values in by_tree.items():
        results[f"{which}_redis_process_us_per_gift"] = round(mean(values), 1) if values else None
    if by_tree["baseline"] and by_tree["current"]:
        results["ratio"] = round(mean(by_tree["current"]) / mean(by_tree["baseline"]), 3)
    return results


def markdown(compared: dict[str, Any], command: str) -> list[str]:
    load = compared["load"]
    lines = [
        HEADING,
        "",
        f"Produced by `{command}` (`load/bench/baseline.py`) on {time.strftime('%Y-%m-%d')}: "
        f"the baseline, commit {compared['baseline_commit']}"
        + (BASELINE_WHY if compared["baseline_commit"] == BASELINE_COMMIT else "")
        + ", exported with `git archive` and served from its own directory with this "
        "tree's packages, and this "
        f"tree ({compared['current_commit']}), back to back. Each run is a fresh worker with "
        f"its embedded Redis pinned to core 0, {load['gifters']} gifter connections on core 1, "
        f"{load['rate']:.0f} gifts/s offered for {load['duration']:.0f} s to one stream"
        + (
            ""
            if load.get("admission", True)
            else "; this tree's admission as good as off (`--no-admission`; the baseline has none)"
        )
        + ". Redis CPU per gift: the redis-server's `used_cpu_user` + `used_cpu_sys` over the "
        "load, per acknowledged gift (`redis_process_us_per_gift`); user / kernel: the two "
        "apart, read around the load (a little wider than its window). Script calls per gift: "
        "`cmdstat_evalsha` calls (the gifts' own, streak closing, state publishing) per "
        "acknowledged gift. When the machine is busy the runs of one tree spread widely, and "
        "this tree refuses what its worker cannot carry in time (`service_unavailable`, "
        "docs/overload.md) where the baseline queues it: compare the means of several rounds "
        "at the rates each acknowledged. Target: this tree's figure at most "
        f"{TARGET_RATIO} of the baseline's.",
        "",
    ]
    if "error" in compared:
        lines += [f"**{compared['error']}**", ""]
    lines += [
        "| run | tree | acked gifts/s | refused / unanswered | Redis CPU per gift, µs "
        "| of it user / kernel | script calls per gift | gifts a call "
        "| server CPU per gift, µs | load average before (1, 5, 15 min) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, run in enumerate(compared["runs"], 1):
        commit = compared["baseline_commit" if run["tree"] == "baseline" else "current_commit"]
        load_before = ", ".join(f"{x:.2f}" for x in run["loadavg_before"])
        split = f"{run['redis_per_gift']['cpu_user_us']} / {run['redis_per_gift']['cpu_sys_us']}"
        lines.append(
            f"| {i} | {run['tree']} ({commit}) | {run['gifts_per_s']} | "
            f"{run['gift_errors'] or 'none'} / {run['gifts_unanswered']} | "
            f"{run['redis_process_us_per_gift']} | {split} | {run['script_calls_per_gift']} | "
            f"{run['gifts_per_gift_call'] or '—'} | {run['server_us_per_gift']} | "
            f"{load_before} |"
        )
    ratio = compared.get("ratio")
    if ratio is not None:
        met = "met" if ratio <= TARGET_RATIO else "not met"
        lines += [
            "",
            f"Mean Redis CPU per gift: baseline {compared['baseline_redis_process_us_per_gift']} "
            f"µs, this tree {compared['current_redis_process_us_per_gift']} µs; this tree / "
            f"baseline = **{ratio}** (target <= {TARGET_RATIO}: {met}).",
        ]
    if compared["runs"]:
        after = ", ".join(f"{x:.2f}" for x in compared["runs"][-1]["loadavg_after"])
        lines += ["", f"Load average after the last run: {after}."]
    return [*lines, ""]


def with_section(report: str, section: list[str], before: str) -> str:
    """`report` with its section headed like `section` replaced by it, or, when it has
    none, inserted before the heading `before` (appended when that is missing too)."""
    text = "\n".join(section).rstrip("\n") + "\n\n"
    start = report.find(section[0] + "\n")
    if start >= 0:
        end = report.find("\n## ", start + len(section[0]))
        return report[:start] + text + (report[end + 1 :] if end >= 0 else "")
    at = report.find(before)
    if at >= 0:
        return report[:at] + text + report[at:]
    return report.rstrip("\n") + "\n\n" + text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--commit", default=BASELINE_COMMIT)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--gifters", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument(
        "--no-admission", action="store_true",
        help="this tree's admission as good as off, as the baseline, which has none",
    )  # fmt: skip
    parser.add_argument(
        "--current-config", default="",
        help="TOML layered over this tree's configuration alone, e.g. "
        "$'[redis]\\ngift_batch_window_ms = 5'",
    )  # fmt: skip
    options = parser.parse_args()
    compared = compare(
        options.commit, options.gifters, options.rate, options.duration, options.rounds,
        admission=not options.no_admission, current_config=options.current_config,
    )  # fmt: skip
    print(orjson.dumps(compared, option=orjson.OPT_INDENT_2).decode())
    command = " ".join(["python -m load.bench.baseline", *sys.argv[1:]])
    report = ROOT / "BENCHMARKS.md"
    from load.bench.__main__ import COMPARISONS

    report.write_text(with_section(report.read_text(), markdown(compared, command), COMPARISONS))


if __name__ == "__main__":
    main()
