"""Starting the command: ``import ganbench`` is light, and a Ctrl-C while torch loads is one line, not a traceback."""
import subprocess
import sys

# A Ctrl-C that lands while torch is being imported (the command's first second), made deterministic:
# the import of torch raises KeyboardInterrupt, as Python does when SIGINT arrives during it.
INTERRUPTED_IMPORT = """
import sys

class InterruptTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, InterruptTorch())
sys.argv = ["ganbench", "parzen", "--help"]
from ganbench.cli import run
run()
"""


def test_importing_ganbench_does_not_load_torch_until_the_scorer_is_used():
    code = ("import sys, ganbench; assert 'torch' not in sys.modules; "
            "from ganbench import parzen, protocol; assert 'torch' in sys.modules; "
            "assert parzen.log_likelihood and protocol.evaluate; print(ganbench.parzen.__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ganbench.scoring.parzen"


def test_an_unknown_top_level_name_is_an_attribute_error():
    import ganbench

    try:
        ganbench.no_such_name  # noqa: B018
    except AttributeError as error:
        assert "no_such_name" in str(error)
    else:
        raise AssertionError("ganbench.no_such_name resolved")


def test_ctrl_c_while_torch_loads_is_one_line_and_status_130():
    done = subprocess.run([sys.executable, "-c", INTERRUPTED_IMPORT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert done.stderr == "ganbench: interrupted while starting; nothing was written\n"
    assert done.stdout == ""
