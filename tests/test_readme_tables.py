"""The README's speed tables are the committed benchmark JSON, rendered: never edited by hand."""
from pathlib import Path

from ganbench.paper import readme_tables

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_speed_tables_match_the_committed_json():
    text = README.read_text()
    generated = readme_tables.sections()
    found = {match.group("name"): match.group("body") for match in readme_tables.SECTION.finditer(text)}
    assert set(found) == set(generated)
    for name, body in found.items():
        assert body == generated[name], f"README's {name} differs from results/: python -m ganbench.paper.readme_tables"


def test_a_hand_edited_number_is_caught():
    text = README.read_text()
    edited = text.replace("| ganbench torch | ", "| ganbench torch | 0.5 s (was ", 1)
    assert edited != text
    assert readme_tables.render(edited, readme_tables.sections()) == text
