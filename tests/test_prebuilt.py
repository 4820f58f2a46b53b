"""The kernels shipped compiled for sm_90 (kernels/prebuilt.py): up to date, genuine, and found by Triton.

Triton's compiler runs without a GPU, so everything but the launch itself is checked here: each
check runs in a child process without TRITON_INTERPRET (the test session's kernels are interpreted),
with its own empty Triton cache. Triton's launch path is driven for real (its binder, its
specialization, the hook, its compile) through ``kernel.warmup`` against a stub driver that answers
as an sm_90 GPU would; only loading the cubin onto a GPU is left to the GPU benchmarks.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow


def run_child(code: str, tmp_path, **environment) -> tuple[str, str]:
    child = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    child.update(TRITON_CACHE_DIR=str(tmp_path / "triton-cache"), **environment)
    completed = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                               env=child, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout, completed.stderr


def last_json(out: tuple[str, str]):
    return json.loads(out[0].strip().splitlines()[-1])


def test_shipped_kernels_match_the_current_sources(tmp_path):
    """Every shipped call has an entry built from its current source and options, by this Triton and
    its ptxas, with the file the manifest names, and no entry is left over: an edited kernel fails
    here until the files are rebuilt."""
    out = run_child("""
        from ganbench.kernels import prebuilt
        print(prebuilt.main(["check"]))
    """, tmp_path)
    assert out[0].strip() == "0"


def test_stale_or_damaged_entries_are_reported(tmp_path):
    """The check can fail: an entry with other options, another Triton, a damaged cubin."""
    out = run_child("""
        import json, shutil, pathlib
        from ganbench.kernels import prebuilt
        folder = pathlib.Path(%r) / "copy"
        shutil.copytree(prebuilt.FOLDER, folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["kernels"][0]["options_hash"] = "0" * 64
        manifest["triton"] = "0.0.0"
        (folder / "manifest.json").write_text(json.dumps(manifest))
        damaged = folder / (manifest["kernels"][1]["file"] + ".cubin")
        damaged.write_bytes(damaged.read_bytes()[:-1] + b"x")
        print(json.dumps(prebuilt.stale_entries(folder)))
    """ % str(tmp_path), tmp_path)
    problems = last_json(out)
    assert any("no entry for its current source and options" in problem for problem in problems)
    assert any("no shipped call makes it" in problem for problem in problems)
    assert any("built by Triton 0.0.0" in problem for problem in problems)
    assert any("not the file the manifest names" in problem for problem in problems)


def test_a_shipped_kernel_is_what_triton_compiles(tmp_path):
    """Rebuilt from source, the smallest and the largest int8 kernels are the shipped ones: the same
    machine code byte for byte (the debug sections hold the compiling machine's paths to the source
    files) and the same metadata, but for the cache key's digest and libdevice's path where they differ."""
    out = run_child("""
        import json, triton
        from ganbench.kernels import prebuilt
        target, backend = prebuilt.target_backend()
        manifest = prebuilt.read_manifest()
        files = {prebuilt.entry_key(e["source_hash"], e["options_hash"]): e["file"] for e in manifest["kernels"]}
        calls = prebuilt.shipped_calls()
        same = []
        for call in (calls[0], calls[4 + 4 * len(prebuilt.SIGMA_COUNTS) - 1]):
            source, options = prebuilt.specialize(call, backend)
            compiled = triton.compile(source, target=target, options=options.__dict__)
            file = prebuilt.FOLDER / files[prebuilt.entry_key(source.hash(), options.hash())]
            code = prebuilt.machine_code(compiled.asm["cubin"])
            shipped = json.loads(file.with_suffix(".json").read_text())
            fresh = json.loads(json.dumps(compiled.metadata._asdict(), default=vars))
            differ = sorted(key for key in shipped.keys() | fresh.keys() if shipped.get(key) != fresh.get(key))
            same.append([call.meta.get("NUM_SIGMAS"), code == prebuilt.machine_code(file.with_suffix(".cubin")
                                                                                   .read_bytes()), differ])
        print(json.dumps(same))
    """, tmp_path)
    # The key's digest and libdevice's path may differ where the checkout or the environment lies elsewhere.
    assert [[count, same] for count, same, _ in last_json(out)] == [[None, True], [16, True]]
    assert all(set(differ) <= {"hash", "extern_libs"} for _, _, differ in last_json(out))


# Triton's launch path on the CPU: a stub driver answers as an sm_90 GPU, and kernel.warmup goes through
# Triton's binder, its specialization, the jit_cache_hook and its compile, as a first launch would.
WARM_UP = """
    import json, os, sys, torch, triton
    from triton.backends.compiler import GPUTarget
    from ganbench.kernels import prebuilt
    from ganbench.kernels.launches import KernelCall

    class StubDriver:
        def get_current_device(self):
            return 0
        def get_current_stream(self, device=None):
            return 0
        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)
        def get_active_torch_device(self):
            return torch.device("cpu")

    triton.runtime.driver.set_active(StubDriver())
    torch.cuda.get_device_capability = lambda device=None: (9, 0)
    prebuilt.build_launcher = lambda source: None     # no libcuda here to link a launcher against
    prebuilt.install(torch.device("cuda"))
    hits = []  # Triton's compilation listener: whether each compile found its kernel in the cache
    triton.knobs.compilation.listener = lambda **arguments: hits.append(arguments["cache_hit"])
    calls = prebuilt.shipped_calls()
    report = []
    for index, change in CASES:
        call = calls[index]
        call = KernelCall(call.kernel, call.grid, call.args, {**call.meta, **change})
        compiled = call.kernel.warmup(*call.args, grid=call.grid, **call.meta)
        report.append({"cache_hit": hits[-1], "seeded": len(prebuilt.seeded), "name": compiled.metadata.name})
    print(json.dumps(report))
"""


def warm_up(tmp_path, cases: str, **environment):
    return run_child(WARM_UP.replace("CASES", cases), tmp_path, **environment)


def test_a_first_launch_finds_the_shipped_kernel(tmp_path):
    """Through Triton's own launch path, an operands kernel, a 16-sigma int8 kernel and a tf32x3 kernel
    are written into the empty cache by the hook and found there: Triton compiles none of them."""
    report = last_json(warm_up(tmp_path, "[(0, {}), (4 + 4 * 4 + 3, {}), (-1, {})]"))
    assert [row["cache_hit"] for row in report] == [True, True, True]
    assert [row["seeded"] for row in report] == [1, 2, 3]


def test_a_launch_nothing_was_shipped_for_compiles(tmp_path):
    """Other warps (other options) and three sigmas (another source specialization): no entry matches,
    nothing is written, and Triton compiles the kernel itself."""
    report = last_json(warm_up(tmp_path, "[(0, {'num_warps': 4}), (23, {'NUM_SIGMAS': 3})]"))
    assert [(row["cache_hit"], row["seeded"]) for row in report] == [(False, 0), (False, 0)]


def test_nothing_is_seeded_where_triton_would_compile_otherwise(tmp_path):
    """A variable that changes compilation (it is in Triton's key, and the build had none) and a knob
    that replaces Triton's stages (it is not): Triton compiles."""
    report = last_json(warm_up(tmp_path, "[(0, {})]", TRITON_DISABLE_LINE_INFO="1"))
    assert (report[0]["cache_hit"], report[0]["seeded"]) == (False, 0)
    code = WARM_UP.replace("prebuilt.install(", "triton.knobs.runtime.add_stages_inspection_hook = "
                                                "lambda *arguments: None\n    prebuilt.install(")
    report = last_json(run_child(code.replace("CASES", "[(0, {})]"), tmp_path))
    assert (report[0]["cache_hit"], report[0]["seeded"]) == (False, 0)


def test_a_failing_seed_is_one_line_and_triton_compiles(tmp_path):
    """The hook cannot write the cache (a read-only one, say): one line on stderr says so, once, with no
    traceback, and Triton compiles each kernel as it would without the hook."""
    code = WARM_UP.replace("hits = []", """import triton.runtime.cache as cache
    def read_only(key):
        raise PermissionError("read-only cache")
    cache.get_cache_manager = read_only  # what the hook writes through; Triton's compile keeps its own
    hits = []""")
    out, err = run_child(code.replace("CASES", "[(0, {}), (1, {})]"), tmp_path)
    assert [(row["cache_hit"], row["seeded"]) for row in last_json((out, err))] == [(False, 0), (False, 0)]
    lines = [line for line in err.splitlines() if line.startswith("ganbench:")]
    assert len(lines) == 1 and "read-only cache" in lines[0] and "compiling instead" in lines[0]
    assert "Traceback" not in err


def test_the_launchers_built_ahead_are_the_ones_triton_builds(tmp_path):
    """For every shipped kernel, the launcher source built ahead from the manifest's signature is the
    one Triton's CudaLauncher generates for it, and it is stored under the key Triton looks it up by."""
    out = run_child("""
        import hashlib, json, sysconfig, types
        from triton.backends.nvidia import driver
        from triton.runtime import build
        from ganbench.kernels import prebuilt
        _, backend = prebuilt.target_backend()
        by_key = {prebuilt.entry_key(e["source_hash"], e["options_hash"]): e for e in prebuilt.read_manifest()["kernels"]}
        built = []  # what CudaLauncher hands the C compiler
        driver.compile_module_from_src = lambda src, **_: built.append(src) or types.SimpleNamespace(launch=None)
        driver.library_dirs = lambda: []  # no libcuda here: nothing is linked
        same = []
        for call in prebuilt.shipped_calls():
            source, options = prebuilt.specialize(call, backend)
            entry = by_key[prebuilt.entry_key(source.hash(), options.hash())]
            metadata = json.loads((prebuilt.FOLDER / (entry["file"] + ".json")).read_text())
            driver.CudaLauncher(source, types.SimpleNamespace(**metadata))
            same.append(built[-1] == prebuilt.launcher_source(entry["signature"]))
        # Stored as compile_module_from_src looks it up (a stand-in compiler writes the library).
        build._build = lambda name, src, folder, *rest: open(folder + "/" + name + ".so", "wb").write(b"so") and (
            folder + "/" + name + ".so")
        prebuilt.build_launcher(built[-1])
        key = hashlib.sha256((built[-1] + build.platform_key()).encode()).hexdigest()
        stored = build.get_cache_manager(key).get_file("__triton_launcher" + sysconfig.get_config_var("EXT_SUFFIX"))
        print(json.dumps([len(same), all(same), len(set(built)), stored is not None]))
    """, tmp_path)
    count, all_same, distinct, stored = last_json(out)
    assert count == 30 and all_same and distinct == 4 and stored  # pointer types do not change a launcher


def test_install_hooks_triton_once_and_keeps_a_hook_that_was_there(tmp_path):
    """On an sm_90 device (its capability faked): the entries are read, Triton's key is hashed on a
    thread, the hook is set once and calls the hook it replaced, whose answer stands."""
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
        prebuilt.build_launcher = lambda source: None
        prebuilt.install(torch.device("cuda"))
        hook = knobs.runtime.jit_cache_hook
        prebuilt.install(torch.device("cuda"))       # a second call changes nothing
        prebuilt._key_thread.join()
        fake = type("Info", (), {"jit_function": type("Kernel", (), {"fn": len})()})()
        answer = hook(key="k", repr="r", fn=fake, compile={}, is_manual_warmup=False, already_compiled=False)
        print(json.dumps({"same_hook": knobs.runtime.jit_cache_hook is hook, "chained": hook is not previous,
                          "answer": answer, "previous_called": calls, "launchers": len(prebuilt._launchers),
                          "entries": sum(len(e) for e in prebuilt._entries.values())}))
    """, tmp_path)
    assert last_json(out) == {"same_hook": True, "chained": True, "answer": True, "previous_called": ["k"],
                              "launchers": 4, "entries": 30}


@pytest.mark.parametrize("case", ["cpu", "switched off", "another gpu", "capability fails"])
def test_install_leaves_triton_alone_where_the_kernels_do_not_apply(case, tmp_path):
    """The CPU, GANBENCH_PREBUILT=0, another GPU: no hook. A failing device query: one line, no hook."""
    device = "cpu" if case == "cpu" else "cuda"
    capability = {"another gpu": "lambda device=None: (8, 0)"}.get(case, "lambda device=None: (9, 0)")
    if case == "capability fails":
        capability = "lambda device=None: (_ for _ in ()).throw(RuntimeError('no device'))"
    environment = {"GANBENCH_PREBUILT": "0"} if case == "switched off" else {}
    out, err = run_child(f"""
        import json, torch
        from triton import knobs
        from ganbench.kernels import prebuilt
        torch.cuda.get_device_capability = {capability}
        prebuilt.build_launcher = lambda source: None
        prebuilt.install(torch.device("{device}"))
        print(json.dumps(knobs.runtime.jit_cache_hook is None))
    """, tmp_path, **environment)
    assert last_json((out, err)) is True
    announced = [line for line in err.splitlines() if line.startswith("ganbench:")]
    assert len(announced) == (1 if case == "capability fails" else 0) and "Traceback" not in err


def test_the_stacked_layout_compiles_to_one_wide_product_a_step(tmp_path):
    """Offline for sm_90: the four-digit kernel's K step is five m64n32k32 products with STACKED off, and
    one m64n128k32 product (the four digit blocks side by side) and the m64n32k32 correction with it on."""
    out = run_child("""
        import json, re, triton
        from ganbench.kernels import prebuilt
        from ganbench.kernels.launches import KernelCall
        target, backend = prebuilt.target_backend()
        call = prebuilt.shipped_calls()[4 + 4 * 1 + 3]   # one sigma, four digits, the correction
        shapes = []
        for stacked in (False, True):
            variant = KernelCall(call.kernel, call.grid, call.args, {**call.meta, "STACKED": stacked})
            source, options = prebuilt.specialize(variant, backend)
            ptx = triton.compile(source, target=target, options=options.__dict__).asm["ptx"]
            shapes.append(sorted(set(re.findall(r"wgmma.mma_async.sync.aligned.(m\\d+n\\d+k\\d+)", ptx))))
        print(json.dumps(shapes))
    """, tmp_path)
    assert last_json(out) == [["m64n32k32"], ["m64n128k32", "m64n32k32"]]


def test_the_unbranched_epilogue_is_straight_line_code_whatever_the_sigma_count(tmp_path):
    """Offline for sm_90: with UNBRANCHED off, each sigma of a tile adds its own branches (the skip, the
    rescale, libdevice's exp2 for large arguments), so the scheduler cannot overlap one sigma's work
    with the next; with it on, 16 sigmas compile to the branches of one."""
    out = run_child("""
        import json, re, triton
        from ganbench.kernels import prebuilt
        from ganbench.kernels.launches import KernelCall
        target, backend = prebuilt.target_backend()
        calls = prebuilt.shipped_calls()
        branches = {}
        for sigmas, index in ((1, 4 + 4 * 1 + 3), (16, 4 + 4 * 4 + 3)):   # four digits, the correction
            for unbranched in (False, True):
                call = calls[index]
                assert call.meta["NUM_SIGMAS"] == sigmas and call.meta["DIGITS"] == 4
                variant = KernelCall(call.kernel, call.grid, call.args, {**call.meta, "UNBRANCHED": unbranched})
                source, options = prebuilt.specialize(variant, backend)
                compiled = triton.compile(source, target=target, options=options.__dict__)
                branches[f"{sigmas}_{unbranched}"] = len(re.findall(r"\\bbra(?:\\.uni)?\\b", compiled.asm["ptx"]))
        print(json.dumps(branches))
    """, tmp_path)
    branches = last_json(out)
    assert branches["16_True"] == branches["1_True"]
    assert branches["16_False"] >= branches["1_False"] + 15 * 2   # a skip and a rescale per sigma at least
