#!/usr/bin/env python3
"""Regenerates tools/link-order/<service>.txt (`make link-order`): the
functions each of the six services runs, most instructions first, for the
linker to lay out together (tools/link-order/build.rs; why in BENCHMARKS.md,
"Code laid out by use").

The kernel maps a binary's pages 64 KB around each one a process touches, so
a service's resident code is every 64 KB stretch that holds a function it
ran; with the functions it runs side by side, that is little more than their
size. The list is made by running the release stack's six services under
callgrind (which names every function executed, however rarely) through
start-up and the shop's mix (browse, view, register, log in, order, poll,
cancel), on its own ports, databases and stream (bench/stack.env).

Symbol names carry a hash of the toolchain, the crate's version and
features and the release profile: regenerate after changing any of them.
Each list starts with the `rustc -V` that made it (a `#` line, which the
linker skips). `link-order.py --check` (run by the compose test on the
release build) fails when a binary was not laid out by its list or holds
under 80 % of its names; built by another toolchain, the names cannot match,
and it says so without failing.
"""
import collections, os, re, shlex, shutil, stat, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVICES = ["gateway", "inventory", "order", "user", "producer", "consumer"]
LISTS = os.path.join(ROOT, "tools/link-order")
SYMBOL = re.compile(r"^[A-Za-z_.$][\w.$]*$")
SECONDS = os.environ.get("LINK_ORDER_SECONDS", "40")


def log(msg):
    print(f"[link-order] {msg}", file=sys.stderr, flush=True)


def bench_env():
    """bench/stack.env's settings (ports, databases, stream), on a run
    directory and databases of this script's own."""
    out = subprocess.run(["bash", "-c", 'ROOT="$PWD"; . bench/stack.env; env -0'], cwd=ROOT,
                         capture_output=True, check=True).stdout
    env = dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    env["STACK_RUN_DIR"] = f"{ROOT}/.run/link-order"
    env["DB_NAME"] = "link_order"
    return env


def drop_databases(env):
    """The run's own databases, dropped before it (a fresh start) and after it."""
    for svc in ["inventory", "order", "user"]:
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qAt", "-c",
                        f"DROP DATABASE IF EXISTS {env['DB_NAME']}_{svc} WITH (FORCE)"], check=True)


def functions(callgrind_file, binary):
    """Function name -> instructions executed in it (its own, not its callees'),
    for the functions of `binary` only."""
    cost = collections.Counter()
    in_binary, current, in_call, positions = False, None, False, 1
    with open(callgrind_file, errors="replace") as f:
        for line in f:
            if line.startswith("positions:"):
                positions = len(line.split()) - 1  # columns before the costs
            elif line.startswith("ob="):
                in_binary = os.path.realpath(line[3:].strip()) == binary
            elif line.startswith("fn="):
                # Recursion levels come as name'2, name'3: one function.
                current = re.sub(r"'\d+$", "", line[3:].strip()) if in_binary else None
                # Only symbols: not callgrind's "(below main)" or a bare address.
                if current and not SYMBOL.match(current):
                    current = None
                in_call = False
                if current:
                    cost[current] += 0
            elif line.startswith("calls="):
                in_call = True  # the next cost line is the callee's, inclusive
            elif line[:1].isdigit() or line[:1] in "+-*":
                if in_call:
                    in_call = False
                elif current:
                    parts = line.split()
                    if len(parts) > positions and parts[positions].isdigit():
                        cost[current] += int(parts[positions])
    return cost


def text_symbols(binary):
    """Function name -> address, for the functions in `binary`'s symbol table."""
    out = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True).stdout
    symbols = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            symbols.setdefault(parts[2], int(parts[0], 16))
    return symbols


def rustc_version():
    return subprocess.run(["rustc", "-V"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def check(bin_dir):
    """That each release binary was laid out by its list: most listed names
    still exist (else the list is stale: `make link-order`), and the listed
    functions come first, in the list's order."""
    rustc = rustc_version()
    for svc in SERVICES:
        lines = open(f"{LISTS}/{svc}.txt").read().splitlines()
        made_by = lines[0].lstrip("# ") if lines and lines[0].startswith("#") else "unknown"
        if made_by != rustc:
            print(f"[link-order] warning: tools/link-order/{svc}.txt was made by {made_by}, this build "
                  f"by {rustc}: its names cannot match, the binary is not laid out by use "
                  "(run `make link-order`)")
            continue
        listed = [line for line in lines if line and not line.startswith("#")]
        symbols = text_symbols(f"{bin_dir}/{svc}")
        held = [symbols[n] for n in listed if n in symbols]
        share = len(held) / max(len(listed), 1)
        if share < 0.8:
            sys.exit(f"{svc}: {len(held)} of the {len(listed)} functions of tools/link-order/{svc}.txt "
                     "are in the binary: the list is stale, run `make link-order`")
        # The listed functions in ascending addresses, all below the unlisted.
        if held != sorted(held):
            sys.exit(f"{svc}: the listed functions are not in the list's order: was it linked with it?")
        # (An unlisted name at a listed function's address is an alias of it.)
        first_unlisted = min(a for a in set(symbols.values()) - set(held))
        if held[-1] > first_unlisted:
            sys.exit(f"{svc}: unlisted functions sit among the listed ones")
        print(f"[link-order] {svc}: {len(held)} of its {len(listed)} listed functions ({share:.0%}), first, in order")


def main():
    if sys.argv[1:2] == ["--check"]:
        return check(sys.argv[2] if len(sys.argv) > 2 else f"{ROOT}/target/release")
    for tool in ["valgrind", "psql"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing (apt-get install valgrind postgresql-client)")
    subprocess.run(["bash", "scripts/release-build.sh"], cwd=ROOT, check=True)
    release = f"{ROOT}/target/release"
    env = bench_env()
    work = tempfile.mkdtemp(prefix="link-order.")
    # Each service started under callgrind, except its `migrate` runs.
    wrappers = f"{work}/bin"
    os.makedirs(wrappers)
    for svc in SERVICES:
        path = f"{wrappers}/{svc}"
        binary, out = shlex.quote(f"{release}/{svc}"), shlex.quote(f"{work}/{svc}.%p")
        with open(path, "w") as f:
            f.write("#!/bin/sh\n"
                    f'[ "$1" = migrate ] && exec {binary} "$@"\n'
                    "exec valgrind -q --tool=callgrind --demangle=no --compress-strings=no "
                    "--compress-pos=no --dump-line=no --dump-instr=no "
                    f'--callgrind-out-file={out} {binary} "$@"\n')
        os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    env["SERVICE_BIN_DIR"] = wrappers
    drop_databases(env)
    subprocess.run(["bash", "scripts/stack.sh", "up"], cwd=ROOT, env=env, check=True)
    try:
        log(f"the shop's mix for {SECONDS} s, under callgrind")
        subprocess.run([f"{release}/loadgen", "--base-url", env["GATEWAY_URL"], "--scenario", "mix",
                        "--rate", "20", "--vus", "16", "--duration", f"{SECONDS}s", "--warmup", "0s",
                        "--users", "8", "--drain-timeout", "120s"], cwd=ROOT, env=env, check=True)
    finally:
        # SIGTERM: each service shuts down and callgrind writes its profile.
        subprocess.run(["bash", "scripts/stack.sh", "down"], cwd=ROOT, env=env, check=True)
        drop_databases(env)
    rustc = rustc_version()
    for svc in SERVICES:
        files = [f for f in os.listdir(work) if f.startswith(f"{svc}.")]
        if not files:
            sys.exit(f"no callgrind profile of {svc} (did it stop cleanly?); see {env['STACK_RUN_DIR']}")
        binary = os.path.realpath(f"{release}/{svc}")
        cost = collections.Counter()
        for name in files:
            cost.update(functions(f"{work}/{name}", binary))
        names = sorted(cost, key=lambda n: (-cost[n], n))
        with open(f"{LISTS}/{svc}.txt", "w") as f:
            f.write(f"# {rustc}\n" + "".join(f"{n}\n" for n in names))
        log(f"{svc}: {len(names)} functions run, written to tools/link-order/{svc}.txt")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
