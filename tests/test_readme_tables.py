"""The README's speed tables are the committed benchmark JSON, rendered: never edited by hand."""
from pathlib import Path

from ganbench.paper import readme_tables

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_speed_tables_match_the_committed_json():
    text = README.read_text()
    generated = readme_tables.sections()
    found = {match.group("name"): match.group("body") for match in readme_tables.SECTION.finditer(text)}
    assert set(found) == set(generated) - {"table1-seconds"}
    for name, body in found.items():
        assert body == generated[name], f"README's {name} differs from results/: python -m ganbench.paper.readme_tables"


def test_the_docs_generated_tables_match_the_committed_json():
    """docs/ quotes the same JSON (the CPU sigma table, each Table 1 row's seconds): rendered, never typed."""
    generated = readme_tables.sections()
    seen = set()
    for document in readme_tables.documents()[1:]:
        text = document.read_text()
        for match in readme_tables.SECTION.finditer(text):
            seen.add(match.group("name"))
            assert match.group("body") == generated[match.group("name")], (
                f"{document.name}'s {match.group('name')} differs from results/: python -m ganbench.paper.readme_tables")
    assert {"speed-cpu-sigmas", "table1-seconds"} <= seen


def test_a_hand_edited_number_is_caught():
    text = README.read_text()
    edited = text.replace("| ganbench torch | ", "| ganbench torch | 0.5 s (was ", 1)
    assert edited != text
    assert readme_tables.render(edited, readme_tables.sections()) == text


def test_a_cold_start_that_compiles_gets_its_row_when_measured():
    """The targets table shows the cold start without the shipped kernels once a run has timed it."""
    import json

    report = json.loads((README.parent / "results" / readme_tables.GPU_TARGETS_REPORT).read_text())
    label = "every kernel compiled"
    assert (label in readme_tables.targets_table(report)) == any(
        "fresh_process_empty_triton_cache_compiling" in report["targets"][name] for name in ("int8", "tf32x3"))
    report["targets"]["int8"]["fresh_process_empty_triton_cache_compiling"] = {"first_call_s": 3.5}
    report["targets"]["tf32x3"].pop("fresh_process_empty_triton_cache_compiling", None)  # one precision timed it
    row = next(line for line in readme_tables.targets_table(report).splitlines() if label in line)
    assert row.endswith("| 3.5 s | not measured |")
