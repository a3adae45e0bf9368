"""load/bench/baseline.py: where its section goes in BENCHMARKS.md, and the order in
which the two trees are run (the measurement itself is a benchmark, not a test)."""

from __future__ import annotations

from load.bench.baseline import HEADING, order, tree_config, with_section
from load.bench.sweep import NO_ADMISSION

COMPARISONS = "## Comparisons between versions"
SECTION = [HEADING, "", "new figures", ""]


def test_a_new_run_replaces_its_section_and_keeps_what_comes_after() -> None:
    report = f"# Benchmarks\n\ntop\n\n{HEADING}\n\nold figures\n\n{COMPARISONS}\n\nkept\n"

    assert with_section(report, SECTION, COMPARISONS) == (
        f"# Benchmarks\n\ntop\n\n{HEADING}\n\nnew figures\n\n{COMPARISONS}\n\nkept\n"
    )


def test_a_report_without_the_section_gets_it_before_the_comparisons() -> None:
    report = f"# Benchmarks\n\ntop\n\n## Overload\n\nsweep\n\n{COMPARISONS}\n\nkept\n"

    assert with_section(report, SECTION, COMPARISONS) == (
        f"# Benchmarks\n\ntop\n\n## Overload\n\nsweep\n\n{HEADING}\n\nnew figures\n\n"
        f"{COMPARISONS}\n\nkept\n"
    )


def test_the_last_section_is_replaced_to_the_end_and_a_report_without_either_heading_appends() -> (
    None
):
    last = with_section(f"# Benchmarks\n\n{HEADING}\n\nold\n\n### kept? no\n", SECTION, COMPARISONS)
    bare = with_section("# Benchmarks\n\ntop\n", SECTION, COMPARISONS)

    assert last == f"# Benchmarks\n\n{HEADING}\n\nnew figures\n\n"
    assert bare == f"# Benchmarks\n\ntop\n\n{HEADING}\n\nnew figures\n\n"


def test_the_trees_alternate_so_a_drift_weighs_on_both() -> None:
    assert order(1) == ["baseline", "current"]
    assert order(2) == ["baseline", "current", "current", "baseline"]


def test_a_setting_for_this_tree_alone_never_reaches_the_baseline() -> None:
    window = "[redis]\ngift_batch_window_ms = 10\n"
    assert tree_config("current", True, window) == window
    assert tree_config("baseline", True, window) == ""
    assert tree_config("current", False, window) == NO_ADMISSION + window
    assert tree_config("baseline", False, window) == NO_ADMISSION
