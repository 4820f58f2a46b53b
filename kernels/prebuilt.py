"""Kernels compiled ahead of time for the GPUs ganbench ships tiles for (sm_90: H100 and H200).

A first call in a new process with an empty Triton cache compiles each kernel it launches (the
int8 operands kernel in two roles, then the Parzen kernel): 3.6-3.7 s on an H200, most of it
Triton's front end, MLIR, LLVM and ptxas (docs/performance.md). What they produce, a cubin and
Triton's metadata, depends on the kernel's source and specialization, the compile options, the
target and Triton's version, and on nothing of the user's machine, so ganbench ships it:

- ``python -m ganbench.kernels.prebuilt build`` compiles every launch of ``shipped_calls()`` for
  sm_90 on any machine (Triton's compiler and ptxas run on the CPU; no GPU is needed) into
  ``kernels/prebuilt/sm_90/``: a cubin and Triton's metadata per kernel, and a manifest. The calls
  are the launchers' own ``KernelCall``s on small CPU tensors, specialized by Triton's own binder,
  so each is compiled exactly as the launch will ask Triton for it.
- At run time (``install``, on a CUDA device) Triton's ``jit_cache_hook`` is called before Triton
  compiles a kernel it has not compiled in this process. For a ganbench kernel whose source hash
  (Triton's: the source and everything it calls, the signature, the specialization, the
  constexprs), options hash and backend hash (ptxas version and arch) equal a manifest entry
  built by the same Triton version, the hook writes the shipped files into Triton's cache under
  the key Triton computes itself; Triton's compile then finds them there, as it would its own.
  Anything else (another GPU, another Triton or one whose Python sources differ, an edited kernel,
  a variable or a knob that changes compilation, a cache that cannot be written) compiles as
  before, and nothing here fails a launch: an error is one line on stderr. ``GANBENCH_PREBUILT=0``
  switches it off.

``install`` also starts, each on a thread, what a cold first call would otherwise do one after the
other: hashing Triton's own sources (Triton's cache key: 0.3-0.4 s, mostly a SHA-256 of its 415 MB
library, which releases Python's lock; the hook waits for it), and building the C launcher of each
shipped kernel signature (a C compiler process of ~0.3 s each on an empty cache, where Triton
builds them at each kernel's first launch), while the main thread starts CUDA's driver and
prepares the first launch.

``python -m ganbench.kernels.prebuilt check`` (and tests/test_prebuilt.py) fails when a kernel has
changed since the files were built: rebuild them with the command above. Triton's source hash holds
the kernel's text, everything it calls and the line it starts on, so a line added or removed above a
kernel in its file is a change too.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import sys
import threading
from pathlib import Path

import numpy as np
import torch
import triton
from ganbench.kernels.parzen_operands import INTERPRETED

from ganbench import atomic
from ganbench.errors import GanbenchError

ARCH = 90                                   # sm_90: the capability of H100 and H200
FOLDER = Path(__file__).parent / "prebuilt" / f"sm_{ARCH}"
MANIFEST = FOLDER / "manifest.json"
DISABLE_VARIABLE = "GANBENCH_PREBUILT"
# Sigmas per pass shipped: nearest neighbours only (k-means, memorisation), one (a test set at the
# chosen sigma), the paper's grid of 10, the full protocol's first grid of 13, 16 (the benchmark's).
SIGMA_COUNTS = (0, 1, 10, 13, 16)
DIMENSION = 784                             # rows of this width (any multiple of 16 specializes alike)


# ---- the shipped launches --------------------------------------------------------------------------

def shipped_calls() -> list:
    """Every launch whose kernel ships compiled, from the launchers' own call functions on CPU tensors.

    Triton specializes on the arguments' types, 16-byte alignment and divisibility by 16 (the row
    counts are not specialized on): widths, strides and split sizes are multiples of 16 in every
    launch, and data of any dimension d divisible by 16 (784 for MNIST) meet these same kernels.
    """
    from ganbench.kernels import partial_tiles, parzen_int8, parzen_lse, parzen_operands
    from ganbench.kernels import parzen_int8_operands as int8_operands

    calls = []
    for dtype in (torch.float32, torch.float64):          # the int8 path takes either as it is
        for role in int8_operands.ROLES:
            call, _ = int8_operands.int8_operands_call(torch.zeros(16, DIMENSION, dtype=dtype), role, 16,
                                                       parzen_int8.WIDTH_MULTIPLE, int8_operands.GPU_TILE)
            calls.append(call)
    width = triton.cdiv(DIMENSION, parzen_int8.WIDTH_MULTIPLE) * parzen_int8.WIDTH_MULTIPLE
    tiles = partial_tiles.SHIPPED_TILES[("int8", (9, 0))]
    query = torch.zeros(tiles["BLOCK_M"], int8_operands.QUERY_BLOCKS * width, dtype=torch.int8)
    bank = torch.zeros(parzen_lse.SPLIT_ROWS_MULTIPLE, int8_operands.BANK_BLOCKS * width, dtype=torch.int8)
    terms = torch.zeros(len(query), dtype=torch.int64), torch.zeros(len(bank), dtype=torch.int64)
    for count in SIGMA_COUNTS:
        for digits in (1, 4):
            for correction in (False, True):
                call, _ = parzen_int8.parzen_int8_call(
                    query, bank, *terms, np.linspace(0.1, 1.0, count), n_queries=len(query), n_bank=len(bank),
                    width=width, digits=digits, correction=correction, rows_per_split=len(bank), tiles=tiles)
                calls.append(call)
    # tf32x3, for queries that are not 8-bit: float32 operands split in three, a plain TF32 dot.
    rows, centre = torch.zeros(16, DIMENSION), torch.zeros(DIMENSION)
    block_k = parzen_lse.MAX_BLOCKS["BLOCK_K"]
    operands = [parzen_operands.operands_call(rows, centre, role, "tf32x3", 16, block_k)[0]
                for role in parzen_operands.ROLES]
    calls.extend(operands)
    tiles = partial_tiles.SHIPPED_TILES[("tf32", (9, 0))]
    query = torch.zeros(tiles["BLOCK_M"], operands[0].args[2].shape[1])
    bank = torch.zeros(parzen_lse.SPLIT_ROWS_MULTIPLE, query.shape[1])
    norms = torch.zeros(len(query)), torch.zeros(len(bank))
    for count in sorted({max(count, 1) for count in SIGMA_COUNTS}):  # the kernel takes at least one sigma
        call, _ = parzen_lse.parzen_lse_call(query, bank, *norms, np.linspace(0.1, 1.0, count),
                                             n_queries=len(query), n_bank=len(bank), dot_precision="tf32",
                                             rows_per_split=len(bank), tiles=tiles)
        calls.append(call)
    return calls


def function_name(jit_function) -> str:
    return f"{jit_function.fn.__module__}:{jit_function.fn.__qualname__}"


def specialize(call, backend):
    """(ASTSource, options) of ``call`` as Triton's launch builds them (JITFunction.run: its binder,
    the debug and instrumentation options it adds, then _pack_args)."""
    from triton import knobs
    from triton.compiler import ASTSource
    from triton.runtime.jit import create_function_from_signature

    kernel = call.kernel
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    kwargs = dict(call.meta)
    kwargs["debug"] = kwargs.get("debug", kernel.debug) or knobs.runtime.debug
    kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    bound_args, specialization, options = binder(*call.args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound_args, specialization, options)
    return ASTSource(kernel, signature, constexprs, attrs), options


def target_backend():
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend

    target = GPUTarget("cuda", ARCH, 32)
    return target, make_backend(target)


# ---- build and check (offline) ---------------------------------------------------------------------

def build(folder: Path = FOLDER) -> list[dict]:
    """Compile every shipped call for sm_90 into ``folder`` (cubin, metadata, manifest); returns the entries."""
    if INTERPRETED:
        raise GanbenchError("building kernels needs Triton's compiler: unset TRITON_INTERPRET")
    target, backend = target_backend()
    folder.mkdir(parents=True, exist_ok=True)
    entries, written = [], set()
    for call in shipped_calls():
        source, options = specialize(call, backend)
        compiled = triton.compile(source, target=target, options=options.__dict__)
        stem = f"{call.kernel.fn.__name__}-{entry_key(source.hash(), options.hash())[:16]}"
        metadata = compiled.metadata._asdict()
        metadata["target"] = vars(metadata["target"])
        atomic.write_bytes(folder / f"{stem}.cubin", compiled.asm["cubin"])
        atomic.write_bytes(folder / f"{stem}.json", json.dumps(metadata, indent=1, sort_keys=True).encode())
        written.update({f"{stem}.cubin", f"{stem}.json"})
        entries.append({"function": function_name(call.kernel), "source_hash": source.hash(),
                        "options_hash": options.hash(), "backend_hash": backend.hash(), "file": stem,
                        "cubin_sha256": hashlib.sha256(compiled.asm["cubin"]).hexdigest(),
                        "signature": source.signature,
                        "constexprs": {repr(path): value for path, value in source.constants.items()}})
    manifest = {"triton": triton.__version__, "triton_sources": triton_sources_digest(), "arch": ARCH,
                "kernels": entries}
    atomic.write_bytes(folder / MANIFEST.name, json.dumps(manifest, indent=1).encode())
    for stale in folder.iterdir():
        if stale.name not in written and stale.name != MANIFEST.name:
            stale.unlink()
    return entries


def entry_key(source_hash: str, options_hash: str) -> str:
    """One shipped kernel's key: its source (with the specialization) and its options."""
    return hashlib.sha256(f"{source_hash}-{options_hash}".encode()).hexdigest()


def triton_sources_digest() -> str:
    """SHA-256 of Triton's Python front end, compiler and backends (what Triton's own cache key hashes
    besides its compiled library, which differs between builds for different Pythons): a Triton
    patched under the same version number does not take kernels another Triton compiled."""
    root = Path(triton.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(path for folder in ("compiler", "backends", "language", "runtime")
                       for path in (root / folder).rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def stale_entries(folder: Path = FOLDER) -> list[str]:
    """What no longer matches: shipped calls without an entry for their current source and options (or
    built by another ptxas), entries no call makes, files that differ from the manifest, and a manifest
    built by another Triton. Empty when up to date."""
    if INTERPRETED:
        raise GanbenchError("checking kernels needs Triton's compiler: unset TRITON_INTERPRET")
    manifest = read_manifest(folder)
    if manifest is None:
        return [f"no manifest at {folder / MANIFEST.name}"]
    problems = [] if manifest["triton"] == triton.__version__ else [
        f"built by Triton {manifest['triton']}, this is {triton.__version__}"]
    if manifest.get("triton_sources") != triton_sources_digest():
        problems.append("built by a Triton whose Python sources differ from this one's")
    _, backend = target_backend()
    by_key = {entry_key(entry["source_hash"], entry["options_hash"]): entry for entry in manifest["kernels"]}
    used = set()
    for call in shipped_calls():
        source, options = specialize(call, backend)
        key = entry_key(source.hash(), options.hash())
        entry = by_key.get(key)
        if entry is None:
            problems.append(f"{function_name(call.kernel)} {call.meta}: no entry for its current source and options")
        elif entry["backend_hash"] != backend.hash():
            problems.append(f"{entry['file']}: built with another ptxas")
        else:
            used.add(key)
    problems += [f"{entry['file']}: no shipped call makes it" for key, entry in by_key.items() if key not in used]
    problems += [f"{entry['file']}.cubin: not the file the manifest names" for entry in manifest["kernels"]
                 if _file_digest(folder / f"{entry['file']}.cubin") != entry["cubin_sha256"]]
    return problems


def _file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def machine_code(cubin: bytes) -> dict[str, bytes | int]:
    """A cubin's sections but its debug ones: name -> contents (size for sections that hold no bytes).

    The debug sections name the source files by their path on the machine that compiled them, and
    ptxas records each file's size there, so two compiles of one kernel differ in them alone
    (a checkout elsewhere, an edit elsewhere in the kernel's file); the code, its resources and
    constants are the same bytes.
    """
    section_offset, = struct.unpack_from("<Q", cubin, 0x28)           # ELF64 header: e_shoff
    entry_size, count, names_index = struct.unpack_from("<HHH", cubin, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", cubin, section_offset + index * entry_size) for index in range(count)]
    names = headers[names_index]
    names = cubin[names[4]:names[4] + names[5]]
    sections = {}
    for name_at, kind, _, _, offset, size, *_ in headers:
        name = names[name_at:names.index(b"\0", name_at)].decode()
        if "debug" not in name:
            sections[name] = size if kind == NO_BITS else cubin[offset:offset + size]
    return sections


NO_BITS = 8  # SHT_NOBITS: shared memory sections hold a size, no bytes


def read_manifest(folder: Path = FOLDER) -> dict | None:
    try:
        return json.loads((folder / MANIFEST.name).read_text())
    except (OSError, ValueError):
        return None


# ---- run time: seeding Triton's cache --------------------------------------------------------------

_installed = False
_install_lock = threading.Lock()
_key_thread: threading.Thread | None = None
_entries: dict[str, dict[str, dict]] = {}      # function -> entry_key -> manifest entry
_launchers: dict[str, threading.Thread] = {}   # launcher source -> the thread building it
_announced = False
seeded: list[str] = []                         # the shipped kernels written into Triton's cache, this process


def install(device: torch.device) -> None:
    """Once a process, on a CUDA device (never under the interpreter): start hashing Triton's sources
    and, where the manifest was built by this Triton, hook Triton's compilation to the shipped kernels.
    Never fails a launch: whatever goes wrong here is one line on stderr, and Triton compiles."""
    global _installed
    if _installed or INTERPRETED or device.type != "cuda" or os.environ.get(DISABLE_VARIABLE, "1") == "0":
        return
    with _install_lock:
        if _installed:
            return
        _installed = True
        try:
            _install(device)
        except Exception as error:  # noqa: BLE001
            _announce(f"ganbench: the shipped kernels are not used ({type(error).__name__}: {error}); "
                      "compiling instead")


def _install(device: torch.device) -> None:
    global _key_thread
    from triton import knobs
    from triton.runtime.cache import triton_key

    _key_thread = threading.Thread(target=_quietly(triton_key), name="ganbench-triton-key", daemon=True)
    _key_thread.start()
    manifest = read_manifest()
    if (manifest is None or manifest.get("triton") != triton.__version__ or manifest.get("arch") != ARCH
            or torch.cuda.get_device_capability(device) != (ARCH // 10, ARCH % 10)
            or manifest.get("triton_sources") != triton_sources_digest()):
        return
    for entry in manifest["kernels"]:
        entry["launcher_source"] = launcher_source(entry["signature"])
        _entries.setdefault(entry["function"], {})[entry_key(entry["source_hash"], entry["options_hash"])] = entry
    knobs.runtime.jit_cache_hook = _chained_hook(knobs.runtime.jit_cache_hook)
    for source in {entry["launcher_source"] for entry in manifest["kernels"]}:
        thread = threading.Thread(target=_quietly(lambda source=source: build_launcher(source)),
                                  name="ganbench-launcher", daemon=True)
        _launchers[source] = thread
        thread.start()


def launcher_source(signature: dict) -> str:
    """The C source of Triton's launcher for a kernel of this signature (CudaLauncher's: constexpr values,
    argument names and pointer types play no part, so the shipped kernels need four launchers)."""
    from triton.backends.nvidia.driver import make_launcher

    return make_launcher({}, dict(signature), [])


LAUNCHER_NAME = "__triton_launcher"


def build_launcher(source: str) -> None:
    """Compile into Triton's cache the launcher Triton would compile at a kernel's first launch (on an
    empty cache each is a C compile of ~0.3 s, here in a compiler process of its own, in parallel).

    Only compiled and stored, as Triton's compile_module_from_src stores it (the same key, the same
    file), never loaded: loading runs the module's initialisation, which reads Triton's CUDA utilities,
    and those exist only once the main thread has started Triton's driver; Triton loads it then.
    """
    import sysconfig
    import tempfile

    from triton.backends.nvidia import driver
    from triton.runtime.build import _build, platform_key
    from triton.runtime.cache import get_cache_manager

    key = hashlib.sha256((source + platform_key()).encode("utf-8")).hexdigest()
    cache = get_cache_manager(key)
    file_name = f"{LAUNCHER_NAME}{sysconfig.get_config_var('EXT_SUFFIX')}"
    if cache.get_file(file_name) is not None:
        return
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, f"{LAUNCHER_NAME}.c")
        with open(path, "w") as handle:
            handle.write(source)
        built = _build(LAUNCHER_NAME, path, folder, driver.library_dirs(), driver.include_dirs, driver.libraries, [])
        with open(built, "rb") as handle:
            cache.put(handle.read(), file_name, binary=True)


def _quietly(function):
    def run():
        try:
            function()
        except Exception:  # noqa: BLE001 - the main thread does it again and reports what fails
            pass
    return run


def _chained_hook(previous):
    """Triton's jit_cache_hook: seed the cache, then whatever hook was there before (its answer stands:
    a true one tells Triton not to compile)."""
    def hook(**arguments):
        try:
            seed(arguments["fn"].jit_function, arguments["compile"])
        except Exception as error:  # noqa: BLE001 - never fail a launch: Triton compiles as it would have
            _announce(f"ganbench: the shipped kernels were not used ({type(error).__name__}: {error}); "
                      "compiling instead")
        return previous(**arguments) if previous is not None else None
    return hook


def seed(jit_function, compile_arguments: dict) -> bool:
    """Have Triton's cache hold the shipped kernel for this compilation; True when one applies.

    ``compile_arguments`` is what Triton hands its jit_cache_hook: the signature, constexprs,
    specialization (``configs[0]``) and options it is about to compile with. Nothing is written where
    Triton would not compile as the build did: knobs that replace or inspect its stages, variables
    that change compilation, another target or ptxas; and nothing where the cache has the kernel.
    """
    entries = _entries.get(function_name(jit_function))
    if not entries or _compilation_is_customised():
        return False
    from triton._C.libtriton import get_cache_invalidating_env_vars
    from triton.compiler import ASTSource
    from triton.runtime.cache import get_cache_key, get_cache_manager

    caches = jit_function.device_caches.get(compile_arguments["device"])
    if caches is None:
        return False
    target, backend = caches[2], caches[3]
    if target.backend != "cuda" or target.arch != ARCH:
        return False
    source = ASTSource(jit_function, compile_arguments["signature"], compile_arguments["constants"],
                       compile_arguments["configs"][0])
    options = launch_options(backend, compile_arguments)
    entry = entries.get(entry_key(source.hash(), options.hash())) if options is not None else None
    environment = get_cache_invalidating_env_vars()
    if entry is None or environment or entry["backend_hash"] != backend.hash():
        return False
    if _key_thread is not None:
        _key_thread.join()
    digest = hashlib.sha256(get_cache_key(source, backend, options, environment).encode("utf-8")).hexdigest()
    cache = get_cache_manager(digest)
    name = source.name[:150]
    if cache.get_group(f"{name}.json") is None:
        cubin = (FOLDER / f"{entry['file']}.cubin").read_bytes()
        if hashlib.sha256(cubin).hexdigest() != entry["cubin_sha256"]:
            raise GanbenchError(f"{entry['file']}.cubin differs from the manifest: reinstall ganbench")
        metadata = json.loads((FOLDER / f"{entry['file']}.json").read_text())
        # What Triton's own compile writes (other fields are what the build's compile wrote, num_warps
        # included, which a compile may change): the key's digest, this machine's library paths (equal
        # in content: the options hash compares them by content), the target and the version.
        metadata.update(hash=digest, extern_libs=options.extern_libs, target=vars(target),
                        triton_version=triton.__version__)
        group = {f"{name}.cubin": cache.put(cubin, f"{name}.cubin", binary=True),
                 f"{name}.json": cache.put(json.dumps(metadata, default=vars), f"{name}.json", binary=False)}
        cache.put_group(f"{name}.json", group)
        seeded.append(entry["file"])
    # Its launcher: wait for the thread building it rather than let Triton compile it a second time.
    launcher = _launchers.get(entry.get("launcher_source"))
    if launcher is not None:
        launcher.join()
    return True


def _compilation_is_customised() -> bool:
    """Knobs under which Triton would not compile as the build did (they are not in its cache key)."""
    from triton import knobs

    return bool(knobs.compilation.override or knobs.compilation.dump_ir or knobs.compilation.always_compile
                or knobs.runtime.add_stages_inspection_hook is not None)


# The options a ganbench launch sets; every other one takes the backend's default.
LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas", "debug", "instrumentation_mode")


def launch_options(backend, compile_arguments: dict):
    """The options object Triton compiles with, rebuilt from the launch options it reports: the hook
    gets them as JSON (``specialization_data``), where tuples are lists and the hash would differ.
    None unless the rebuilt options serialize exactly as Triton's."""
    reported = json.loads(compile_arguments["specialization_data"])["options"]
    options = backend.parse_options({name: reported[name] for name in LAUNCH_OPTIONS if name in reported})
    same = json.loads(json.dumps(options.__dict__, default=vars)) == reported
    return options if same else None


def _announce(message: str) -> None:
    global _announced
    if not _announced:
        _announced = True
        print(message, file=sys.stderr)


# ---- command line ----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ganbench.kernels.prebuilt",
                                     description="Build or check the kernels shipped compiled for sm_90.")
    parser.add_argument("action", choices=("build", "check"))
    arguments = parser.parse_args(argv)
    if arguments.action == "build":
        entries = build()
        print(f"built {len(entries)} kernels for sm_{ARCH} into {FOLDER}")
        return 0
    problems = stale_entries()
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("the shipped kernels are out of date: python -m ganbench.kernels.prebuilt build", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
