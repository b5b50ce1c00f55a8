#!/usr/bin/env python3
"""The measuring half of `make bench` (scripts/bench.sh starts the stack and
calls this): every figure beside its baseline, in one run, repeated, medians.

Per figure it reads utime+stime of every server process from /proc before and
after, so CPU per operation is reported per process. Settings come from the
environment bench.sh exports (see bench/stack.env).
"""
import json, os, re, statistics, subprocess, sys, tempfile, time, urllib.request

ENV = os.environ
SECONDS = int(ENV.get("BENCH_SECONDS", "10"))
REPEATS = int(ENV.get("BENCH_REPEATS", "3"))
CONNECTIONS = int(ENV.get("BENCH_CONNECTIONS", "32"))
# The burst: this many shoppers ordering at once for BENCH_SECONDS; the
# confirmations that fall behind drain after it (0 skips it).
BURST_USERS = int(ENV.get("BENCH_BURST_USERS", "256"))
# A burst leaves a backlog that takes a while to confirm: loadgen waits this
# long for every order to be terminal before it counts the run as failed.
BURST_DRAIN_TIMEOUT = ENV.get("BENCH_BURST_DRAIN_TIMEOUT", "300s")
# The sustained figure: orders at this rate, open loop, for this long, once
# after the bursts (0 skips it); confirmations keep up when the drain after it
# stays short.
SUSTAINED_RATE = int(ENV.get("BENCH_SUSTAINED_RATE", "1000"))
SUSTAINED_SECONDS = int(ENV.get("BENCH_SUSTAINED_SECONDS", "60"))
BIN_DIR = ENV["SERVICE_BIN_DIR"]
RUN_DIR = ENV["STACK_RUN_DIR"]
GATEWAY = ENV["GATEWAY_URL"]
DB = ENV["DB_NAME"]
BASELINE_ADDR = ENV["BENCH_BASELINE_ADDR"]
SERVICES = ["gateway", "inventory", "order", "user", "producer", "consumer"]
TICK_US = 1_000_000 / os.sysconf("SC_CLK_TCK")
PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qAt", "-v", "ON_ERROR_STOP=1"]
# make bench runs the order figure again after this many orders exist
# (scripts/bench.sh sets it for the full run; 0 skips it).
PREFILL_ORDERS = int(ENV.get("BENCH_PREFILL_ORDERS", "0"))
PRODUCT_IDS = [f"00000000-0000-4000-8000-0000000000{p}" for p in range(10, 30)]


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def sh(args, **kw):
    done = subprocess.run(args, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        raise SystemExit(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


# ------------------------------------------------------------- processes

def service_pids():
    pids = {}
    for svc in SERVICES:
        with open(f"{RUN_DIR}/{svc}.pid") as f:
            pids[svc] = int(f.read().strip())
    return pids


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def groups():
    """Process group name -> pids. PostgreSQL and NATS are shared with other
    users of this machine: only the backends of the benchmark's databases and
    PostgreSQL's WAL writer, checkpointer and background writer count; NATS is
    the server on the benchmark's NATS_ADDR port (default 4222)."""
    out = {svc: [pid] for svc, pid in service_pids().items()}
    out["postgres"], out["nats"] = [], []
    nats_port = re.sub(r".*:", "", ENV.get("NATS_ADDR", "nats://127.0.0.1:4222"))
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        cmd = cmdline(entry)
        if cmd.startswith("postgres: ") and (
            f" {DB}_" in cmd or re.search(r"walwriter|checkpointer|background writer", cmd)
        ):
            out["postgres"].append(int(entry))
        elif "nats-server" in cmd.split(" ")[0] and (f"-p {nats_port}" in cmd or f":{nats_port}" in cmd):
            out["nats"].append(int(entry))
    if ENV.get("BASELINE_PID"):
        out["baseline"] = [int(ENV["BASELINE_PID"])]
    return out


def cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime
    except OSError:
        return None


def snapshot():
    return {g: {pid: cpu_ticks(pid) for pid in pids} for g, pids in groups().items()}


def cpu_us(before, after):
    """Microseconds of CPU per group between two snapshots (processes started
    in between count whole; ones that ended are lost)."""
    out = {}
    for g, pids in after.items():
        total = 0
        for pid, ticks in pids.items():
            if ticks is not None:
                total += ticks - (before.get(g, {}).get(pid) or 0)
        out[g] = total * TICK_US
    return out


def status_kb(pid, field, source="status"):
    """A kB field of /proc/<pid>/status (VmRSS, VmHWM) or, with
    source="smaps_rollup", of the process's summed mappings (Pss)."""
    with open(f"/proc/{pid}/{source}") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


# --------------------------------------------------------------- clients

def wrk(url):
    out = sh(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", url])
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    ops = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise SystemExit(f"wrk saw {bad.group(1)} error answers from {url}:\n{out}")

    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", out)
        return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
    return {"rate": rate, "ops": ops, "p50": pct(50), "p99": pct(99)}


def pgbench(db, script, clients, extra=()):
    out = sh(["pgbench", "-h", "127.0.0.1", "-U", "postgres", "-n", "-M", "prepared",
              "-c", str(clients), "-j", "2", "-T", str(SECONDS), *extra, "-f", script, db])
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
    lat = float(re.search(r"latency average = ([\d.]+) ms", out).group(1))
    return {"rate": tps, "ops": int(tps * SECONDS), "avg_ms": lat}


def loadgen(scenario, rate="0", vus=CONNECTIONS, extra=(), seconds=SECONDS):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        sh([f"{BIN_DIR}/loadgen", "--base-url", GATEWAY, "--scenario", scenario,
            "--rate", rate, "--vus", str(vus), "--duration", f"{seconds}s",
            "--warmup", "1s", "--users", "8", "--json", f.name, *extra])
        return json.load(open(f.name))


# --------------------------------------------------------------- figures

def checkpoints():
    """PostgreSQL's checkpoints so far (timed and requested): one during a
    figure writes beside its commits and lengthens its tail."""
    done = subprocess.run(PSQL + ["-d", "postgres", "-c",
                                  "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"],
                          capture_output=True, text=True)
    return int(done.stdout) if done.returncode == 0 and done.stdout.strip().isdigit() else None


def checkpoint_now():
    """Every figure starts on a fresh checkpoint, so the WAL the figures before
    it wrote cannot force one into it: one such checkpoint tripled the POST
    tail at half the maximum (BENCHMARKS.md). `measured` calls it before its
    CPU snapshot, so the checkpointer's work is not charged to the figure."""
    sh(PSQL + ["-d", "postgres", "-c", "CHECKPOINT"])


def counting_checkpoints(fn):
    """Runs one figure and records how many checkpoints still fell in it."""
    before = checkpoints()
    result = fn()
    after = checkpoints()
    result["checkpoints"] = None if before is None or after is None else after - before
    return result


def measured(fn):
    """Runs one figure; CPU from snapshots before and after, plus samples every
    0.2 s meanwhile so processes that end with it (pgbench's backends) count."""
    import threading
    checkpoint_now()
    before = snapshot()
    seen, done = {}, threading.Event()

    def sample():
        while True:
            for g, pids in snapshot().items():
                for pid, ticks in pids.items():
                    if ticks is not None:
                        seen.setdefault(g, {})[pid] = ticks
            if done.wait(0.2):
                return
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = counting_checkpoints(fn)
    finally:
        done.set()
        sampler.join()
    result["cpu"] = cpu_us(before, seen)
    return result


def prepare_pgbench_data():
    rows = ",".join(f"('{i}', 'pgbench product', 'pgbench', 1000000000, 1.50, now(), now())" for i in PRODUCT_IDS)
    sh(PSQL + ["-d", f"{DB}_inventory", "-c",
               f"INSERT INTO products (id, name, category, stock, price, created_at, updated_at) VALUES {rows} "
               "ON CONFLICT (id) DO UPDATE SET stock = 1000000000"])
    return sh(PSQL + ["-d", f"{DB}_user", "-c", "SELECT id FROM users ORDER BY created_at LIMIT 1"]).strip()


def prefill(count, user_id):
    """`count` orders as a shop that has run for a while holds them: CONFIRMED
    orders with a line, an idempotency key and their sent outbox record, and
    the inventory ledger's rows of them."""
    order_sql = f"""
        INSERT INTO orders (id, user_id, status, total, status_reason, idempotency_key,
                            request_fingerprint, created_at, updated_at)
        SELECT gen_random_uuid(), '{user_id}', 'CONFIRMED', 1.50, NULL, 'prefill-' || g, 'prefill',
               now() - interval '1 hour', now() - interval '1 hour'
        FROM generate_series(1, {count}) g;
        INSERT INTO order_items (order_id, line_no, product_id, quantity, unit_price)
        SELECT id, 0, '{PRODUCT_IDS[0]}', 1, 1.50 FROM orders WHERE request_fingerprint = 'prefill';
        INSERT INTO outbox (order_id, event_type, payload, trace_context, created_at, sent_at, attempts)
        SELECT id, 'order.created', '\\x00', '{{}}', created_at, created_at, 1
        FROM orders WHERE request_fingerprint = 'prefill';"""
    inventory_sql = f"""
        INSERT INTO order_ledger (order_id, outcome, reason)
        SELECT gen_random_uuid(), 'APPLIED', 'prefill' FROM generate_series(1, {count});
        INSERT INTO order_ledger_lines (order_id, product_id, quantity)
        SELECT order_id, '{PRODUCT_IDS[0]}', 1 FROM order_ledger WHERE reason = 'prefill';"""
    # Each -c is a transaction of its own: VACUUM cannot run inside one.
    vacuum = lambda *tables: [arg for t in tables for arg in ("-c", f"VACUUM ANALYZE {t}")]
    sh(PSQL + ["-d", f"{DB}_order", "-c", order_sql, *vacuum("orders", "order_items", "outbox")], timeout=1800)
    sh(PSQL + ["-d", f"{DB}_inventory", "-c", inventory_sql, *vacuum("order_ledger", "order_ledger_lines")],
       timeout=1800)


def product_id_via_api():
    def call(path, body=None, token=None):
        req = urllib.request.Request(GATEWAY + path, method="POST" if body else "GET",
                                     data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
        return json.load(urllib.request.urlopen(req))
    token = call("/users/login", {"username": ENV["ADMIN_USERNAME"], "password": ENV["ADMIN_PASSWORD"]})["token"]
    return call("/products", {"name": "Laptop", "category": "Electronics", "stock": 100, "price": 999.99}, token)["id"]


def main():
    user_id = prepare_pgbench_data()
    product = product_id_via_api()
    pids = service_pids()
    idle_rss = {svc: status_kb(pid, "VmRSS") for svc, pid in pids.items()}
    # RSS counts every page a process maps, libc's shared ones in each of the
    # six; PSS splits a shared page among the processes that map it.
    idle_pss = {svc: status_kb(pid, "Pss", "smaps_rollup") for svc, pid in pids.items()}
    runs = {k: [] for k in ["get", "bare", "select", "orders", "order_sql", "orders_filled", "half", "burst",
                            "sustained"]}

    def open_loop(scenario, rate):
        """Latency at a given rate, open loop: requests go out on schedule
        whether or not earlier ones were answered (no coordinated omission).
        The connections of the closed loop that found the maximum, and one
        client thread: every cycle the client spends is taken from the stack."""
        s = loadgen(scenario, rate=f"{rate:.0f}", vus=CONNECTIONS, extra=["--threads", "1"])
        op = s["operations"][scenario]
        return {"scenario": scenario, "target": rate, "rate": op["rate"], "p50": op["p50_ms"],
                "p99": op["p99_ms"], "ops": op["count"]}

    def orders(vus=CONNECTIONS, extra=(), rate="0", seconds=SECONDS):
        s = loadgen("create-order", rate=rate, vus=vus, extra=extra, seconds=seconds)
        op = s["operations"]["create-order"]
        if any(k.startswith("5") or not k.isdigit() for k in op["errors"]) or s["stock"]["conserved"] is not True:
            raise SystemExit(f"order run failed: {json.dumps(s)}")
        confirmed = s["operations"].get("order-confirmed", {})
        return {"rate": op["rate"], "p50": op["p50_ms"], "p99": op["p99_ms"], "ops": op["count"],
                "confirmed_rate": s["orders"]["confirmed_per_s"], "confirmed": s["orders"]["confirmed_total"],
                "drain_s": s["orders"]["drain_s"],
                "to_confirmed_p50": confirmed.get("p50_ms"), "to_confirmed_p99": confirmed.get("p99_ms")}

    def order_figure(vus=CONNECTIONS, extra=(), **loop):
        result = measured(lambda: orders(vus, extra, **loop))
        # The user service only served loadgen's set-up (bcrypt logins).
        result["cpu"].pop("user", None)
        return result

    def order_sql():
        with subprocess.Popen(["pgbench", "-h", "127.0.0.1", "-U", "postgres", "-n", "-M", "prepared",
                               "-c", str(CONNECTIONS // 2), "-j", "1", "-T", str(SECONDS),
                               "-f", "bench/order-inventory.sql", f"{DB}_inventory"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as inv:
            orders_db = pgbench(f"{DB}_order", "bench/order-orders.sql", CONNECTIONS // 2,
                                extra=["-D", f"user_id={user_id}"])
            out, err = inv.communicate()
            if inv.returncode != 0:
                raise SystemExit(f"pgbench order-inventory failed: {err}")
        inventory_tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
        rate = min(orders_db["rate"], inventory_tps)
        return {"rate": rate, "ops": int(rate * SECONDS), "order_db": orders_db["rate"], "inventory_db": inventory_tps}

    for r in range(REPEATS):
        log(f"repeat {r + 1}/{REPEATS}: GET /products/{{id}} (wrk -c{CONNECTIONS}, {SECONDS} s)")
        runs["get"].append(measured(lambda: wrk(f"{GATEWAY}/products/{product}")))
        log("bare actix-web handler")
        runs["bare"].append(measured(lambda: wrk(f"http://{BASELINE_ADDR}/products/{product}")))
        log(f"pgbench: the product SELECT (prepared, -c {CONNECTIONS})")
        runs["select"].append(measured(lambda: pgbench(f"{DB}_inventory", "bench/product-select.sql", CONNECTIONS)))
        log(f"orders: loadgen create-order, closed loop, {CONNECTIONS} users")
        runs["orders"].append(order_figure())
        log(f"pgbench: one order's SQL on both databases at once (prepared, -c {CONNECTIONS // 2} each)")
        runs["order_sql"].append(measured(order_sql))
    for scenario, key in [("get-product", "get"), ("create-order", "orders")]:
        rate = med(runs[key], "rate") / 2
        log(f"{scenario} open loop at half the maximum ({rate:,.0f}/s)")
        checkpoint_now()
        runs["half"].append(counting_checkpoints(lambda: open_loop(scenario, rate)))
    peak_rss = {svc: status_kb(pid, "VmHWM") for svc, pid in pids.items()}
    burst_rss = None
    if BURST_USERS:
        for r in range(REPEATS):
            log(f"repeat {r + 1}/{REPEATS}: burst, {BURST_USERS} users ordering at once for {SECONDS} s, then the drain")
            runs["burst"].append(order_figure(BURST_USERS, ["--drain-timeout", BURST_DRAIN_TIMEOUT]))
        burst_rss = {svc: status_kb(pid, "VmHWM") for svc, pid in pids.items()}
    if SUSTAINED_RATE and SUSTAINED_SECONDS:
        log(f"sustained: {SUSTAINED_RATE:,} orders/s open loop for {SUSTAINED_SECONDS} s, then the drain")
        runs["sustained"].append(order_figure(BURST_USERS or CONNECTIONS, ["--drain-timeout", BURST_DRAIN_TIMEOUT],
                                              rate=str(SUSTAINED_RATE), seconds=SUSTAINED_SECONDS))
    if PREFILL_ORDERS:
        log(f"filling {PREFILL_ORDERS:,} orders (orders, lines, sent outbox records, ledger)")
        prefill(PREFILL_ORDERS, user_id)
        for r in range(REPEATS):
            log(f"repeat {r + 1}/{REPEATS}: orders again, {PREFILL_ORDERS:,} orders in the tables")
            runs["orders_filled"].append(order_figure())
    report(runs, idle_rss, idle_pss, peak_rss, burst_rss)


def med(items, key):
    values = [i[key] for i in items if i.get(key) is not None]
    return statistics.median(values) if values else None


def cpu_line(items, per="ops", only=None):
    """Median CPU µs per operation per process group, largest first; the
    stack's groups unless `only` names others."""
    names = sorted({g for i in items for g in i["cpu"]})
    per_op = {}
    for g in names:
        if (only is None and g == "baseline") or (only is not None and g not in only):
            continue
        vals = [i["cpu"].get(g, 0) / i[per] for i in items if i.get(per)]
        if vals:
            per_op[g] = statistics.median(vals)
    shown = ", ".join(f"{g} {v:.0f}" for g, v in sorted(per_op.items(), key=lambda kv: -kv[1]) if v >= 1)
    return f"{sum(per_op.values()):.0f} ({shown})"


def report(runs, idle_rss, idle_pss, peak_rss, burst_rss):
    get, bare, select, orders, sql, filled, burst, sustained = (
        runs[k] for k in ["get", "bare", "select", "orders", "order_sql", "orders_filled", "burst", "sustained"])
    rows = [
        ("GET /products/{id} (wrk -c%d)" % CONNECTIONS, f"{med(get, 'rate'):,.0f} req/s", "pgbench SELECT",
         med(get, "rate") / med(select, "rate"), cpu_line(get), f"{med(get, 'p50'):.2f} / {med(get, 'p99'):.2f}"),
        ("GET /products/{id}", f"{med(get, 'rate'):,.0f} req/s", "bare actix-web",
         med(get, "rate") / med(bare, "rate"), "", ""),
        ("POST /orders accepted (loadgen, %d users)" % CONNECTIONS, f"{med(orders, 'rate'):,.0f} orders/s", "pgbench order SQL",
         med(orders, "rate") / med(sql, "rate"), "", f"{med(orders, 'p50'):.2f} / {med(orders, 'p99'):.2f}"),
        ("orders CONFIRMED end to end", f"{med(orders, 'confirmed_rate'):,.0f} orders/s (drain {med(orders, 'drain_s'):.1f} s)",
         "pgbench order SQL", med(orders, "confirmed_rate") / med(sql, "rate"), cpu_line(orders, per="confirmed"), ""),
        *([("POST /orders accepted in a burst (loadgen, %d users)" % BURST_USERS, f"{med(burst, 'rate'):,.0f} orders/s",
            "pgbench order SQL", med(burst, "rate") / med(sql, "rate"), "",
            f"{med(burst, 'p50'):.2f} / {med(burst, 'p99'):.2f}"),
           ("orders CONFIRMED, the burst", f"{med(burst, 'confirmed_rate'):,.0f} orders/s (drain {med(burst, 'drain_s'):.1f} s)",
            "pgbench order SQL", med(burst, "confirmed_rate") / med(sql, "rate"), cpu_line(burst, per="confirmed"), "")]
          if burst else []),
        *([(f"orders CONFIRMED, open loop at {SUSTAINED_RATE:,}/s for {SUSTAINED_SECONDS} s (POST p50 / p99)",
            f"{med(sustained, 'confirmed_rate'):,.0f} orders/s (drain {med(sustained, 'drain_s'):.1f} s; "
            f"to CONFIRMED p50 {med(sustained, 'to_confirmed_p50'):,.0f} / p99 {med(sustained, 'to_confirmed_p99'):,.0f} ms)",
            "pgbench order SQL", med(sustained, "confirmed_rate") / med(sql, "rate"), cpu_line(sustained, per="confirmed"),
            f"{med(sustained, 'p50'):.2f} / {med(sustained, 'p99'):.2f}")]
          if sustained else []),
        *([("POST /orders accepted, %s orders already in the tables" % f"{PREFILL_ORDERS:,}",
             f"{med(filled, 'rate'):,.0f} orders/s", "empty tables (above)", med(filled, "rate") / med(orders, "rate"),
             "", f"{med(filled, 'p50'):.2f} / {med(filled, 'p99'):.2f}"),
            ("orders CONFIRMED, %s orders already in the tables" % f"{PREFILL_ORDERS:,}",
             f"{med(filled, 'confirmed_rate'):,.0f} orders/s (drain {med(filled, 'drain_s'):.1f} s)",
             "empty tables (above)", med(filled, "confirmed_rate") / med(orders, "confirmed_rate"),
             cpu_line(filled, per="confirmed"), "")] if filled else []),
        *[(f"{h['scenario']} open loop at half the maximum ({h['target']:,.0f}/s asked)",
           f"{h['rate']:,.0f}/s", "", None, "", f"{h['p50']:.2f} / {h['p99']:.2f}") for h in runs["half"]],
        ("baseline: pgbench product SELECT (prepared, -c%d)" % CONNECTIONS, f"{med(select, 'rate'):,.0f} tps", "", None,
         cpu_line(select, only=["postgres"]), f"avg {med(select, 'avg_ms'):.2f}"),
        ("baseline: bare actix-web handler (wrk -c%d)" % CONNECTIONS, f"{med(bare, 'rate'):,.0f} req/s", "", None,
         cpu_line(bare, only=["baseline"]), f"{med(bare, 'p50'):.2f} / {med(bare, 'p99'):.2f}"),
        ("baseline: pgbench order SQL (both databases at once, -c%d each)" % (CONNECTIONS // 2),
         f"{med(sql, 'rate'):,.0f} tps (order db {med(sql, 'order_db'):,.0f}, inventory db {med(sql, 'inventory_db'):,.0f})",
         "", None, cpu_line(sql, only=["postgres"]), ""),
    ]
    print()
    print(f"make bench: {REPEATS} repeat(s) of {SECONDS} s per figure, medians; binaries {BIN_DIR}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print()
    print("| figure | value | baseline (same run) | ratio | server CPU µs per operation: total (per process) | p50 / p99 ms |")
    print("|---|---|---|---|---|---|")
    for name, value, base, ratio, cpu, lat in rows:
        print(f"| {name} | {value} | {base} | {'' if ratio is None else f'{ratio:.2f}'} | {cpu} | {lat} |")
    during = lambda items: sum(i.get("checkpoints") or 0 for i in items)
    hit = [f"{label} {during(items)}" for label, items in [
        ("GET", get), ("bare handler", bare), ("pgbench SELECT", select), ("closed loop", orders),
        ("pgbench order SQL", sql), *[(f"{h['scenario']} at half the maximum", [h]) for h in runs["half"]],
        ("burst", burst), ("sustained", sustained), ("prefilled", filled)]
        if during(items)]
    print()
    print("PostgreSQL checkpoints during the figures (they write beside the commits): "
          + (", ".join(hit) if hit else "none"))
    print()
    print("| RSS of the services (MB) | " + " | ".join(SERVICES) + " | total |")
    print("|---|" + "---|" * (len(SERVICES) + 1))
    rss_rows = [("idle, after start-up", idle_rss),
                ("idle, PSS (shared pages split among the processes mapping them)", idle_pss),
                ("peak (VmHWM) before the burst", peak_rss)]
    if burst_rss:
        rss_rows.append((f"peak (VmHWM) after the burst of {BURST_USERS} users", burst_rss))
    for label, rss in rss_rows:
        print(f"| {label} | " + " | ".join(f"{rss[s] / 1024:.1f}" for s in SERVICES) + f" | {sum(rss.values()) / 1024:.1f} |")
    with open(os.path.join(RUN_DIR, "bench-results.json"), "w") as f:
        json.dump({"runs": runs, "idle_rss_kb": idle_rss, "idle_pss_kb": idle_pss, "peak_rss_kb": peak_rss, "burst_rss_kb": burst_rss}, f, indent=1)


if __name__ == "__main__":
    main()
