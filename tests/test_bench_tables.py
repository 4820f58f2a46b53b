"""The README's speed tables are the committed benchmark JSON, rendered: never edited by hand."""
from pathlib import Path

from ganbench.paper import bench_tables

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_speed_tables_match_the_committed_json():
    text = README.read_text()
    generated = bench_tables.sections()
    found = {match.group("name"): match.group("body") for match in bench_tables.SECTION.finditer(text)}
    assert set(found) == set(generated)
    for name, body in found.items():
        assert body == generated[name], f"README's {name} differs from results/: python -m ganbench.paper.bench_tables"


def test_a_hand_edited_number_is_caught():
    text = README.read_text()
    edited = text.replace("| ganbench torch | ", "| ganbench torch | 0.5 s (was ", 1)
    assert edited != text
    assert bench_tables.render(edited, bench_tables.sections()) == text
