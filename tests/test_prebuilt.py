"""The kernels shipped compiled for sm_90 (kernels/prebuilt.py): up to date, genuine, and found by Triton.

Triton's compiler runs without a GPU, so everything but the launch itself is checked here: each
check runs in a child process without TRITON_INTERPRET (the test session's kernels are interpreted),
with its own empty Triton cache.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow


def run_child(code: str, tmp_path, **environment) -> str:
    child = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    child.update(TRITON_CACHE_DIR=str(tmp_path / "triton-cache"), **environment)
    completed = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                               env=child, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def test_shipped_kernels_match_the_current_sources(tmp_path):
    """Every shipped call has an entry built from its current source, options and ptxas, by this
    Triton, and no entry is left over: an edited kernel fails here until the files are rebuilt."""
    out = run_child("""
        from ganbench.kernels import prebuilt
        print(prebuilt.main(["check"]))
    """, tmp_path)
    assert out.strip() == "0"


def test_a_stale_entry_is_reported(tmp_path):
    """The check can fail: a manifest whose entry has another options hash, and one from another Triton."""
    out = run_child("""
        import json, shutil, pathlib
        from ganbench.kernels import prebuilt
        folder = pathlib.Path(%r) / "copy"
        shutil.copytree(prebuilt.FOLDER, folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["kernels"][0]["options_hash"] = "0" * 64
        manifest["triton"] = "0.0.0"
        (folder / "manifest.json").write_text(json.dumps(manifest))
        print(json.dumps(prebuilt.stale_entries(folder)))
    """ % str(tmp_path), tmp_path)
    problems = json.loads(out.strip().splitlines()[-1])
    assert any("other options" in problem for problem in problems)
    assert any("built by Triton 0.0.0" in problem for problem in problems)


def test_a_shipped_kernel_is_what_triton_compiles(tmp_path):
    """Rebuilt from source, the smallest and the largest int8 kernels are the shipped ones, byte for byte
    but for their debug sections (which hold the compiling machine's paths to the source files)."""
    out = run_child("""
        import json, triton
        from ganbench.kernels import prebuilt
        target, backend = prebuilt.target_backend()
        manifest = prebuilt.read_manifest()
        files = {entry["source_hash"]: entry["file"] for entry in manifest["kernels"]}
        calls = prebuilt.shipped_calls()
        same = []
        for call in (calls[0], calls[4 + 4 * len(prebuilt.SIGMA_COUNTS) - 1]):
            source, options = prebuilt.specialize(call, backend)
            compiled = triton.compile(source, target=target, options=options.__dict__)
            shipped = (prebuilt.FOLDER / (files[source.hash()] + ".cubin")).read_bytes()
            code = prebuilt.machine_code(compiled.asm["cubin"])
            same.append([call.meta.get("NUM_SIGMAS"), code == prebuilt.machine_code(shipped) and len(code) > 10])
        print(json.dumps(same))
    """, tmp_path)
    assert json.loads(out.strip().splitlines()[-1]) == [[None, True], [16, True]]


SEED_THROUGH_THE_HOOK = """
    import json, time, triton
    from triton.runtime.jit import compute_cache_key
    from ganbench.kernels import prebuilt
    target, backend = prebuilt.target_backend()
    manifest = prebuilt.read_manifest()
    for entry in manifest["kernels"]:
        prebuilt._entries.setdefault(entry["function"], {})[entry["source_hash"]] = entry
    hook = prebuilt._chained_hook(None)
    hits = []  # Triton's compilation listener: whether each compile found its kernel in the cache
    triton.knobs.compilation.listener = lambda **arguments: hits.append(arguments["cache_hit"])
    report = []
    for index in INDICES:
        call = prebuilt.shipped_calls()[index]
        META_CHANGE
        kernel = call.kernel
        # What JITFunction.run has when it calls the hook on an sm_90 GPU (device 0).
        kernel.device_caches[0] = ({}, {}, target, backend, None)
        source, options = prebuilt.specialize(call, backend)
        key = compute_cache_key({}, [], options)
        answer = kernel._call_hook(hook, key, source.signature, 0, source.constants, options, [source.attrs], False)
        started = time.perf_counter()
        compiled = triton.compile(source, target=target, options=options.__dict__)
        seconds = time.perf_counter() - started
        entry = next((e for e in manifest["kernels"] if e["source_hash"] == source.hash()), None)
        shipped = entry and (prebuilt.FOLDER / (entry["file"] + ".cubin")).read_bytes()
        report.append({"answer": answer, "seconds": seconds, "cache_hit": hits[-1],
                       "shipped": compiled.asm["cubin"] == shipped, "name": compiled.metadata.name})
    print(json.dumps(report))
"""


def test_triton_finds_a_seeded_kernel_in_its_cache(tmp_path):
    """Triton's jit_cache_hook, called as Triton calls it before compiling, writes the shipped kernel
    under Triton's own key: the compile that follows is a cache hit returning the shipped cubin."""
    code = SEED_THROUGH_THE_HOOK.replace("INDICES", "[0, 4 + 4 * 4 + 3, len(prebuilt.shipped_calls()) - 1]")
    out = run_child(code.replace("META_CHANGE", "pass"), tmp_path)
    report = json.loads(out.strip().splitlines()[-1])
    assert [row["answer"] for row in report] == [None] * 3        # never tells Triton to skip the kernel
    assert all(row["cache_hit"] and row["shipped"] for row in report), report


def test_nothing_is_seeded_for_a_launch_that_was_not_shipped(tmp_path):
    """Other warps than the shipped tile: the source matches no entry, Triton compiles its own kernel."""
    code = SEED_THROUGH_THE_HOOK.replace("INDICES", "[0]")
    change = "call = type(call)(call.kernel, call.grid, call.args, {**call.meta, 'num_warps': 4})"
    report = json.loads(run_child(code.replace("META_CHANGE", change), tmp_path).strip().splitlines()[-1])
    assert not report[0]["cache_hit"] and not report[0]["shipped"]


def test_install_does_nothing_on_the_cpu_or_when_switched_off(monkeypatch):
    import torch
    from ganbench.kernels import prebuilt

    triton_knobs = pytest.importorskip("triton").knobs
    before = triton_knobs.runtime.jit_cache_hook
    prebuilt.install(torch.device("cpu"))
    monkeypatch.setenv(prebuilt.DISABLE_VARIABLE, "0")
    prebuilt.install(torch.device("cuda"))
    assert triton_knobs.runtime.jit_cache_hook is before and not prebuilt._installed


def test_the_launchers_built_ahead_are_the_ones_triton_builds(tmp_path):
    """For every shipped kernel, the launcher source built ahead from the manifest's signature is the
    one Triton's CudaLauncher generates for it (so its build lands in the cache entry Triton looks up)."""
    out = run_child("""
        import json, types
        from triton.backends.nvidia import driver
        from ganbench.kernels import prebuilt
        _, backend = prebuilt.target_backend()
        by_hash = {entry["source_hash"]: entry for entry in prebuilt.read_manifest()["kernels"]}
        built = []  # what CudaLauncher hands the C compiler
        driver.compile_module_from_src = lambda src, **_: built.append(src) or types.SimpleNamespace(launch=None)
        driver.library_dirs = lambda: []  # no libcuda here: nothing is compiled or linked
        same = []
        for call in prebuilt.shipped_calls():
            source, _ = prebuilt.specialize(call, backend)
            entry = by_hash[source.hash()]
            metadata = json.loads((prebuilt.FOLDER / (entry["file"] + ".json")).read_text())
            driver.CudaLauncher(source, types.SimpleNamespace(**metadata))
            same.append(built[-1] == prebuilt.launcher_source(entry["signature"]))
        print(json.dumps([len(same), all(same), len(set(built))]))
    """, tmp_path)
    count, all_same, distinct = json.loads(out.strip().splitlines()[-1])
    assert count == 30 and all_same and distinct == 4  # pointer types do not change a launcher


def test_install_hooks_triton_once_and_keeps_a_hook_that_was_there(tmp_path):
    """On an sm_90 device (its capability faked here): the manifest's entries are read, Triton's key is
    hashed on a thread, the hook is set once and calls the hook it replaced, whose answer stands."""
    out = run_child("""
        import json, torch
        from triton import knobs
        from ganbench.kernels import prebuilt
        calls = []
        def previous(**arguments):
            calls.append(arguments["key"])
            return True
        knobs.runtime.jit_cache_hook = previous
        torch.cuda.get_device_capability = lambda device=None: (9, 0)
        prebuilt.install(torch.device("cuda"))
        hook = knobs.runtime.jit_cache_hook
        prebuilt.install(torch.device("cuda"))       # a second call changes nothing
        prebuilt._key_thread.join()
        fake = type("Info", (), {"jit_function": type("Kernel", (), {"fn": len})()})()
        answer = hook(key="k", repr="r", fn=fake, compile={}, is_manual_warmup=False, already_compiled=False)
        print(json.dumps({"same_hook": knobs.runtime.jit_cache_hook is hook, "chained": hook is not previous,
                          "answer": answer, "previous_called": calls,
                          "entries": sum(len(e) for e in prebuilt._entries.values())}))
    """, tmp_path)
    report = json.loads(out.strip().splitlines()[-1])
    assert report == {"same_hook": True, "chained": True, "answer": True, "previous_called": ["k"], "entries": 30}
