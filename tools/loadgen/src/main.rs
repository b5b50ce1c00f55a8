//! `loadgen`: drives the gateway's public REST API open-loop and reports
//! latency per operation, orders confirmed per second end to end, and whether
//! the stock of its own products was conserved. See `loadgen --help`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use http::{Method, StatusCode};
use indicatif::{ProgressBar, ProgressStyle};
use loadgen::client::{Client, Extras};
use loadgen::mix::{Mix, Op};
use loadgen::parse_duration;
use loadgen::schedule::OpenLoop;
use loadgen::stats::{OpSummary, Outcome, Recorder};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    /// Browse, view, register/login, order, poll, cancel some.
    Mix,
    Browse,
    GetProduct,
    Register,
    Login,
    /// `POST /orders` only; the orders are polled to a terminal state.
    CreateOrder,
}

#[derive(Debug, Parser)]
#[command(version, about = "Open-loop load generator for the shop's REST API")]
struct Args {
    /// The gateway's base URL: `http://host:port`, with a path prefix if it
    /// is served under one.
    #[arg(
        long,
        env = "LOADGEN_BASE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    base_url: String,
    #[arg(long, value_enum, default_value = "mix")]
    scenario: Scenario,
    /// Requests started per second, on schedule whatever the answers take
    /// (open loop). 0: closed loop, each virtual user as fast as it can.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Virtual users: the most requests in flight at once.
    #[arg(long, default_value_t = 64)]
    vus: usize,
    /// Threads that send the requests (0: one per core). On the machine the
    /// stack runs on, fewer threads leave it more of the cores, and a thread
    /// that wakes another costs more than the request itself.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Measured time (e.g. 10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Load before the measured time, not recorded.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Customers registered before the run and shared by the virtual users.
    #[arg(long, default_value_t = 8)]
    users: usize,
    /// Products created for the run (orders only use these).
    #[arg(long, default_value_t = 20)]
    products: usize,
    /// Initial stock of each product created for the run.
    #[arg(long, default_value_t = 1_000_000)]
    stock: i64,
    /// Share of confirmed orders cancelled again (the mix scenario only).
    #[arg(long, default_value_t = 0.2)]
    cancel_ratio: f64,
    /// How often one order is polled while it is not terminal (a shop's page
    /// asks now and then; polling as fast as possible would spend the
    /// stack's capacity on answering polls).
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    poll_interval: Duration,
    /// How long to wait after the load for orders to become terminal.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Per-request client timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    request_timeout: Duration,
    #[arg(long, env = "ADMIN_USERNAME", default_value = "admin")]
    admin_username: String,
    #[arg(
        long,
        env = "ADMIN_PASSWORD",
        default_value = "admin-password",
        hide_env_values = true
    )]
    admin_password: String,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl Args {
    fn check(&self) -> anyhow::Result<()> {
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            bail!("--rate must be 0 (closed loop) or a positive number");
        }
        if self.vus == 0 || self.users == 0 || self.products == 0 {
            bail!("--vus, --users and --products must be at least 1");
        }
        if self.duration.is_zero() {
            bail!("--duration must be positive");
        }
        if !(0.0..=1.0).contains(&self.cancel_ratio) {
            bail!("--cancel-ratio must be between 0 and 1");
        }
        // Orders take up to 3 units of up to 3 products; room for a long run.
        if !(1..=1_000_000_000).contains(&self.stock) {
            bail!("--stock must be between 1 and 1000000000");
        }
        Ok(())
    }

    fn mix(&self) -> Mix {
        match self.scenario {
            Scenario::Mix => Mix::shop(),
            Scenario::Browse => Mix::only(Op::Browse),
            Scenario::GetProduct => Mix::only(Op::GetProduct),
            Scenario::Register => Mix::only(Op::Register),
            Scenario::Login => Mix::only(Op::Login),
            Scenario::CreateOrder => Mix::only(Op::CreateOrder),
        }
    }
}

/// A fresh customer name (usernames are at most 32 characters).
fn new_username() -> String {
    format!("lg-{}", &Uuid::new_v4().simple().to_string()[..20])
}

// ------------------------------------------------------------------ the API

struct Api {
    base: String,
    http: Client,
}

/// An answer, or why there was none.
type Answer = Result<(StatusCode, Value), Outcome>;

impl Api {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> Answer {
        let json = body.map(|body| serde_json::to_vec(body).expect("a Value serializes"));
        let extras = Extras {
            bearer: token,
            idempotency_key: key,
            json: json.as_deref(),
        };
        let (status, bytes) = self.send(method, path, extras).await?;
        // Error bodies are problem+json; an empty or odd body is kept as Null.
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// A read whose outcome is its status alone: the body is not parsed (the
    /// catalogue reads run at tens of thousands per second).
    async fn read(&self, path: &str, ok: StatusCode) -> Outcome {
        outcome_of(
            &self.send(Method::GET, path, Extras::default()).await,
            |s| s == ok,
        )
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        extras: Extras<'_>,
    ) -> Result<(StatusCode, bytes::Bytes), Outcome> {
        self.http
            .send(method, path, extras)
            .await
            .map_err(|failure| Outcome::Transport(failure.as_str()))
    }

    /// Setup calls must succeed with `expected`.
    async fn must(
        &self,
        what: &str,
        expected: u16,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        // Set-up is not measured: a service shedding load (503, e.g. the
        // User service bounding concurrent password hashing) or a rate limit
        // (429) is waited out for up to half a minute.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut pause = Duration::from_millis(50);
        loop {
            match self.call(method.clone(), path, token, body, None).await {
                Ok((status, value)) if status.as_u16() == expected => return Ok(value),
                Ok((status, _))
                    if matches!(status.as_u16(), 429 | 503) && Instant::now() < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Ok((status, value)) => bail!("{what}: HTTP {status}: {value}"),
                Err(outcome) => bail!("{what}: no answer ({outcome:?}) from {}", self.base),
            }
        }
    }
}

/// An answer's outcome (its body, parsed or not, plays no part).
fn outcome_of<B>(
    answer: &Result<(StatusCode, B), Outcome>,
    ok: impl Fn(StatusCode) -> bool,
) -> Outcome {
    match answer {
        Ok((status, _)) if ok(*status) => Outcome::Ok,
        Ok((status, _)) => Outcome::Status(status.as_u16()),
        Err(outcome) => outcome.clone(),
    }
}

// --------------------------------------------------------------- run state

struct Customer {
    username: String,
    password: String,
    token: String,
}

struct Product {
    id: String,
}

#[derive(Debug, Clone, Serialize)]
struct OrderLine {
    product_id: String,
    quantity: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrderState {
    Pending,
    Confirmed,
    Rejected,
    Cancelled,
}

impl OrderState {
    fn parse(text: &str) -> Option<OrderState> {
        match text {
            "PENDING" => Some(OrderState::Pending),
            "CONFIRMED" => Some(OrderState::Confirmed),
            "REJECTED" => Some(OrderState::Rejected),
            "CANCELLED" => Some(OrderState::Cancelled),
            _ => None,
        }
    }
}

struct TrackedOrder {
    id: String,
    customer: usize,
    lines: Vec<OrderLine>,
    /// When its POST was due.
    scheduled: Instant,
    state: OrderState,
    /// Decided at creation: cancel it once it is CONFIRMED.
    cancel: bool,
    /// Not polled before this.
    next_poll: Instant,
}

/// An order whose POST got no clear answer (no response or a 5xx): it may
/// or may not exist. After the load its POST is replayed with the same
/// Idempotency-Key, which returns the order if it exists and creates it if not.
struct Unresolved {
    key: String,
    customer: usize,
    body: Value,
    lines: Vec<OrderLine>,
    scheduled: Instant,
    cancel: bool,
}

#[derive(Default)]
struct OrderBook {
    pending: Vec<TrackedOrder>,
    terminal: Vec<TrackedOrder>,
    unresolved: Vec<Unresolved>,
    /// When the last order became terminal.
    last_terminal: Option<Instant>,
}

struct Run {
    api: Api,
    mix: Mix,
    cancel_ratio: f64,
    customers: Vec<Customer>,
    products: Vec<Product>,
    categories: Vec<String>,
    catalogue_pages: u32,
    recorder: std::sync::Mutex<Recorder>,
    orders: Mutex<OrderBook>,
    poll_interval: Duration,
    started: AtomicU64,
    finished: AtomicU64,
}

const PAGE_SIZE: u32 = 20;
/// How often the orders due for a poll are looked for: each poll goes out
/// within this of its time, as a shopper's page polls on its own clock,
/// rather than a pass's worth of polls at once.
const POLL_PASS_INTERVAL: Duration = Duration::from_millis(5);

impl Run {
    fn record(&self, op: Op, scheduled: Instant, outcome: &Outcome) {
        self.recorder
            .lock()
            .expect("recorder lock")
            .record(op, scheduled, Instant::now(), outcome);
    }

    async fn execute(&self, op: Op, scheduled: Instant) {
        self.started.fetch_add(1, Ordering::Relaxed);
        let outcome = match op {
            Op::Browse => {
                let page = 1 + fastrand::u32(0..self.catalogue_pages);
                let path = if fastrand::bool() {
                    let category = &self.categories[fastrand::usize(0..self.categories.len())];
                    format!("/products?category={category}&page=1&page_size={PAGE_SIZE}")
                } else {
                    format!("/products?page={page}&page_size={PAGE_SIZE}")
                };
                self.api.read(&path, StatusCode::OK).await
            }
            Op::GetProduct => {
                let product = &self.products[fastrand::usize(0..self.products.len())];
                let path = format!("/products/{}", product.id);
                self.api.read(&path, StatusCode::OK).await
            }
            Op::Register => {
                let username = new_username();
                let body = json!({"username": username, "email": format!("{username}@example.com"), "password": "load generator password"});
                outcome_of(
                    &self
                        .api
                        .call(Method::POST, "/users/register", None, Some(&body), None)
                        .await,
                    |s| s == StatusCode::CREATED,
                )
            }
            Op::Login => {
                let customer = &self.customers[fastrand::usize(0..self.customers.len())];
                let body = json!({"username": customer.username, "password": customer.password});
                outcome_of(
                    &self
                        .api
                        .call(Method::POST, "/users/login", None, Some(&body), None)
                        .await,
                    |s| s == StatusCode::OK,
                )
            }
            Op::CreateOrder => self.create_order(scheduled).await,
            Op::GetOrder | Op::CancelOrder | Op::OrderConfirmed => {
                unreachable!("{op:?} follows from orders; it is never drawn")
            }
        };
        self.record(op, scheduled, &outcome);
        self.finished.fetch_add(1, Ordering::Relaxed);
    }

    async fn create_order(&self, scheduled: Instant) -> Outcome {
        let customer = fastrand::usize(0..self.customers.len());
        // 1-3 distinct products, 1-3 units each.
        let mut picks: Vec<usize> = (0..self.products.len()).collect();
        fastrand::shuffle(&mut picks);
        let lines: Vec<OrderLine> = picks[..fastrand::usize(1..=3).min(picks.len())]
            .iter()
            .map(|&p| OrderLine {
                product_id: self.products[p].id.clone(),
                quantity: fastrand::i64(1..=3),
            })
            .collect();
        let body = json!({"items": lines});
        let key = Uuid::new_v4().to_string();
        let cancel = fastrand::f64() < self.cancel_ratio;
        let answer = self
            .api
            .call(
                Method::POST,
                "/orders",
                Some(&self.customers[customer].token),
                Some(&body),
                Some(&key),
            )
            .await;
        let outcome = outcome_of(&answer, |s| s == StatusCode::CREATED);
        match answer {
            Ok((status, order)) if status.is_success() => {
                self.track(&order, customer, lines, scheduled, cancel).await;
            }
            Ok((status, _)) if status.is_client_error() => {} // refused: no order
            _ => self.orders.lock().await.unresolved.push(Unresolved {
                key,
                customer,
                body,
                lines,
                scheduled,
                cancel,
            }),
        }
        outcome
    }

    async fn track(
        &self,
        order: &Value,
        customer: usize,
        lines: Vec<OrderLine>,
        scheduled: Instant,
        cancel: bool,
    ) {
        let id = order["id"].as_str().unwrap_or_default().to_owned();
        let state = order["status"]
            .as_str()
            .and_then(OrderState::parse)
            .unwrap_or(OrderState::Pending);
        let mut book = self.orders.lock().await;
        let order = TrackedOrder {
            id,
            customer,
            lines,
            scheduled,
            state,
            cancel,
            next_poll: Instant::now() + self.poll_interval,
        };
        if state == OrderState::Pending || (state == OrderState::Confirmed && cancel) {
            book.pending.push(order);
        } else {
            book.last_terminal = Some(Instant::now());
            book.terminal.push(order);
        }
    }

    /// One pass over the orders not yet terminal: polls each that is due,
    /// and cancels the confirmed ones chosen for it. Returns how many are
    /// left.
    async fn poll_orders(&self) -> usize {
        let now = Instant::now();
        let (due, waiting): (Vec<TrackedOrder>, Vec<TrackedOrder>) =
            std::mem::take(&mut self.orders.lock().await.pending)
                .into_iter()
                .partition(|order| order.next_poll <= now);
        self.orders.lock().await.pending.extend(waiting);
        let polled: Vec<TrackedOrder> = futures::stream::iter(due)
            .map(|order| self.advance(order))
            .buffer_unordered(32)
            .collect()
            .await;
        let mut book = self.orders.lock().await;
        for mut order in polled {
            order.next_poll = Instant::now() + self.poll_interval;
            let done = match order.state {
                OrderState::Pending => false,
                OrderState::Confirmed => !order.cancel,
                OrderState::Rejected | OrderState::Cancelled => true,
            };
            if done {
                book.last_terminal = Some(Instant::now());
                book.terminal.push(order);
            } else {
                book.pending.push(order);
            }
        }
        book.pending.len()
    }

    async fn advance(&self, mut order: TrackedOrder) -> TrackedOrder {
        let token = self.customers[order.customer].token.as_str();
        if order.state == OrderState::Pending {
            let sent = Instant::now();
            let answer = self
                .api
                .call(
                    Method::GET,
                    &format!("/orders/{}", order.id),
                    Some(token),
                    None,
                    None,
                )
                .await;
            self.record(
                Op::GetOrder,
                sent,
                &outcome_of(&answer, |s| s == StatusCode::OK),
            );
            if let Ok((StatusCode::OK, body)) = &answer
                && let Some(state) = body["status"].as_str().and_then(OrderState::parse)
            {
                order.state = state;
                if state == OrderState::Confirmed {
                    self.record(Op::OrderConfirmed, order.scheduled, &Outcome::Ok);
                }
            }
        }
        if order.state == OrderState::Confirmed && order.cancel {
            let sent = Instant::now();
            let answer = self
                .api
                .call(
                    Method::POST,
                    &format!("/orders/{}/cancel", order.id),
                    Some(token),
                    None,
                    None,
                )
                .await;
            self.record(
                Op::CancelOrder,
                sent,
                &outcome_of(&answer, |s| s == StatusCode::OK),
            );
            if let Ok((StatusCode::OK, _)) = &answer {
                order.state = OrderState::Cancelled;
            }
        }
        order
    }

    /// Replays the POST of every order that got no clear answer.
    async fn resolve_unresolved(&self) -> usize {
        let unresolved = std::mem::take(&mut self.orders.lock().await.unresolved);
        let mut still = Vec::new();
        for order in unresolved {
            let token = self.customers[order.customer].token.as_str();
            match self
                .api
                .call(
                    Method::POST,
                    "/orders",
                    Some(token),
                    Some(&order.body),
                    Some(&order.key),
                )
                .await
            {
                Ok((status, body)) if status.is_success() => {
                    self.track(
                        &body,
                        order.customer,
                        order.lines,
                        order.scheduled,
                        order.cancel,
                    )
                    .await
                }
                Ok((status, _)) if status.is_client_error() => {}
                _ => still.push(order),
            }
        }
        let left = still.len();
        self.orders.lock().await.unresolved = still;
        left
    }
}

// ------------------------------------------------------------------- setup

async fn setup(args: &Args) -> anyhow::Result<Run> {
    let api = Api {
        base: args.base_url.clone(),
        http: Client::new(&args.base_url, args.request_timeout).context("--base-url")?,
    };
    let admin = api
        .must(
            "admin login",
            200,
            Method::POST,
            "/users/login",
            None,
            Some(&json!({"username": args.admin_username, "password": args.admin_password})),
        )
        .await
        .context("set --admin-username/--admin-password (or ADMIN_USERNAME/ADMIN_PASSWORD)")?;
    let admin_token = admin["token"]
        .as_str()
        .context("login answer without a token")?
        .to_owned();

    // Products of this run only, in a few categories named after it, so the
    // category filter and the stock check see exactly these.
    let run_id = &Uuid::new_v4().simple().to_string()[..8];
    let categories: Vec<String> = (0..4.min(args.products))
        .map(|k| format!("bench-{run_id}-{k}"))
        .collect();
    let products: Vec<Product> = futures::stream::iter(0..args.products)
        .map(|k| {
            let (api, token, categories) = (&api, &admin_token, &categories);
            async move {
                let category = categories[k % categories.len()].clone();
                let body = json!({"name": format!("Bench product {k}"), "category": category, "stock": args.stock, "price": 9.99});
                let created = api.must("create product", 201, Method::POST, "/products", Some(token), Some(&body)).await?;
                let id = created["id"].as_str().context("product without an id")?.to_owned();
                anyhow::Ok(Product { id })
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;

    let customers: Vec<Customer> = futures::stream::iter(0..args.users)
        .map(|_| {
            let api = &api;
            async move {
                let username = new_username();
                let password = "load generator password".to_owned();
                let body = json!({"username": username, "email": format!("{username}@example.com"), "password": password});
                api.must("register", 201, Method::POST, "/users/register", None, Some(&body)).await?;
                let login = api
                    .must("login", 200, Method::POST, "/users/login", None, Some(&json!({"username": username, "password": password})))
                    .await?;
                let token = login["token"].as_str().context("login without a token")?.to_owned();
                anyhow::Ok(Customer { username, password, token })
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;

    let first = api
        .must(
            "list products",
            200,
            Method::GET,
            "/products?page_size=1",
            None,
            None,
        )
        .await?;
    let total = first["total"].as_u64().unwrap_or(0);
    let catalogue_pages = (total.div_ceil(PAGE_SIZE as u64)).clamp(1, u32::MAX as u64) as u32;

    let now = Instant::now();
    Ok(Run {
        api,
        mix: args.mix(),
        cancel_ratio: if args.scenario == Scenario::Mix {
            args.cancel_ratio
        } else {
            0.0
        },
        customers,
        products,
        categories,
        catalogue_pages,
        recorder: std::sync::Mutex::new(Recorder::new(now, now)),
        orders: Mutex::new(OrderBook::default()),
        poll_interval: args.poll_interval,
        started: AtomicU64::new(0),
        finished: AtomicU64::new(0),
    })
}

// ------------------------------------------------------------------- drive

/// Sends the load: open loop at `args.rate`, or closed loop when it is 0.
async fn drive(run: &Arc<Run>, args: &Args, start: Instant) {
    let end = start + args.warmup + args.duration;
    let mut workers = Vec::new();
    if args.rate > 0.0 {
        // Each idle user claims the next request of the plan and sends it
        // when it is due (at once when the plan is ahead of the users):
        // nothing waits for a lock or a dispatcher.
        let plan = OpenLoop::new(start, args.rate, args.warmup + args.duration);
        let next = Arc::new(AtomicU64::new(0));
        for _ in 0..args.vus {
            let (run, next) = (run.clone(), next.clone());
            workers.push(tokio::spawn(async move {
                while let Some(due) = plan.due(next.fetch_add(1, Ordering::Relaxed)) {
                    tokio::time::sleep_until(due.into()).await;
                    let op = run.mix.pick(fastrand::u32(0..run.mix.total()));
                    run.execute(op, due).await;
                }
            }));
        }
    } else {
        for _ in 0..args.vus {
            let run = run.clone();
            workers.push(tokio::spawn(async move {
                while Instant::now() < end {
                    let op = run.mix.pick(fastrand::u32(0..run.mix.total()));
                    run.execute(op, Instant::now()).await;
                }
            }));
        }
    }
    for worker in workers {
        let _ = worker.await;
    }
}

/// A live line on stderr (indicatif hides it when stderr is not a terminal).
fn progress_line(total: Duration) -> ProgressBar {
    let bar = ProgressBar::new(total.as_secs().max(1));
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

#[derive(Serialize)]
struct OrdersSummary {
    /// Orders due in the measured window that were created.
    created: u64,
    confirmed: u64,
    /// CONFIRMED orders of the whole run, warm-up included (for CPU per order).
    confirmed_total: u64,
    rejected: u64,
    cancelled: u64,
    /// Still PENDING (or without a clear answer) when the drain timed out.
    unfinished: u64,
    /// Orders of the measured window CONFIRMED, per second from the window's
    /// start until the last of them was seen terminal.
    confirmed_per_s: f64,
    /// From the end of the load until the last order was terminal.
    drain_s: f64,
}

#[derive(Serialize)]
struct StockCheck {
    /// `None` when some order's fate is unknown, so it cannot be checked.
    conserved: Option<bool>,
    /// Product id -> (expected, actual) for every product that differs.
    mismatches: BTreeMap<String, (i64, i64)>,
}

#[derive(Serialize)]
struct Summary {
    scenario: Scenario,
    target_rate: f64,
    vus: usize,
    warmup_s: f64,
    duration_s: f64,
    operations: BTreeMap<&'static str, OpSummary>,
    orders: OrdersSummary,
    stock: StockCheck,
}

async fn check_stock(run: &Run, stock: i64, timeout: Duration) -> anyhow::Result<StockCheck> {
    let book = run.orders.lock().await;
    if !book.pending.is_empty() || !book.unresolved.is_empty() {
        return Ok(StockCheck {
            conserved: None,
            mismatches: BTreeMap::new(),
        });
    }
    let mut expected: BTreeMap<&str, i64> = run
        .products
        .iter()
        .map(|p| (p.id.as_str(), stock))
        .collect();
    for order in book
        .terminal
        .iter()
        .filter(|o| o.state == OrderState::Confirmed)
    {
        for line in &order.lines {
            *expected
                .get_mut(line.product_id.as_str())
                .expect("orders use the run's products") -= line.quantity;
        }
    }
    drop(book);
    // A cancel returns its stock through the order flow, a moment later.
    let deadline = Instant::now() + timeout;
    loop {
        let mut mismatches = BTreeMap::new();
        for (id, want) in &expected {
            let product = run
                .api
                .must(
                    "get product",
                    200,
                    Method::GET,
                    &format!("/products/{id}"),
                    None,
                    None,
                )
                .await?;
            let actual = product["stock"].as_i64().context("product without stock")?;
            if actual != *want {
                mismatches.insert((*id).to_owned(), (*want, actual));
            }
        }
        if mismatches.is_empty() || Instant::now() > deadline {
            return Ok(StockCheck {
                conserved: Some(mismatches.is_empty()),
                mismatches,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn main_inner(args: Args) -> anyhow::Result<bool> {
    args.check()?;
    eprintln!(
        "loadgen: setting up {} products and {} customers at {}",
        args.products, args.users, args.base_url
    );
    let mut run = setup(&args).await?;
    let start = Instant::now() + Duration::from_millis(50);
    let from = start + args.warmup;
    let until = from + args.duration;
    *run.recorder.get_mut().expect("recorder lock") = Recorder::new(from, until);
    let run = Arc::new(run);

    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (run, stop) = (run.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                run.poll_orders().await;
                tokio::time::sleep(POLL_PASS_INTERVAL).await;
            }
        })
    };
    let bar = progress_line(args.warmup + args.duration);
    let ticker = {
        let (run, stop, bar) = (run.clone(), stop.clone(), bar.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = run.started.load(Ordering::Relaxed);
                let finished = run.finished.load(Ordering::Relaxed);
                let errors = run.recorder.lock().expect("recorder lock").error_count();
                let (pending, terminal) = {
                    let book = run.orders.lock().await;
                    (book.pending.len(), book.terminal.len())
                };
                bar.set_position(start.elapsed().as_secs());
                let phase = if Instant::now() < from {
                    "warm-up"
                } else if Instant::now() < until {
                    "measuring"
                } else {
                    "draining"
                };
                bar.set_message(format!(
                    "{phase}: {started} sent, {} in flight, {errors} errors; orders {terminal} terminal, {pending} pending",
                    started - finished
                ));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    drive(&run, &args, start).await;
    let load_end = Instant::now();
    // Drain: replay unclear POSTs, then poll until every order is terminal.
    stop.store(true, Ordering::Relaxed);
    let _ = poller.await;
    let drain_deadline = load_end + args.drain_timeout;
    loop {
        let unresolved = run.resolve_unresolved().await;
        let pending = run.poll_orders().await;
        if (pending == 0 && unresolved == 0) || Instant::now() > drain_deadline {
            break;
        }
        tokio::time::sleep(POLL_PASS_INTERVAL).await;
    }
    let _ = ticker.await;
    bar.finish_and_clear();

    let stock = check_stock(&run, args.stock, Duration::from_secs(30)).await?;
    let book = run.orders.lock().await;
    let in_window = |at: Instant| at >= from && at < until;
    let measured: Vec<&TrackedOrder> = book
        .terminal
        .iter()
        .chain(&book.pending)
        .filter(|o| in_window(o.scheduled))
        .collect();
    let count = |state| measured.iter().filter(|o| o.state == state).count() as u64;
    let last = book.last_terminal.unwrap_or(until).max(until);
    let confirmed = count(OrderState::Confirmed);
    let orders = OrdersSummary {
        created: measured.len() as u64,
        confirmed,
        confirmed_total: book
            .terminal
            .iter()
            .filter(|o| o.state == OrderState::Confirmed)
            .count() as u64,
        rejected: count(OrderState::Rejected),
        cancelled: count(OrderState::Cancelled),
        unfinished: (book.pending.len() + book.unresolved.len()) as u64,
        confirmed_per_s: confirmed as f64 / last.duration_since(from).as_secs_f64(),
        drain_s: book
            .last_terminal
            .map_or(0.0, |t| t.saturating_duration_since(load_end).as_secs_f64()),
    };
    drop(book);
    let summary = Summary {
        scenario: args.scenario,
        target_rate: args.rate,
        vus: args.vus,
        warmup_s: args.warmup.as_secs_f64(),
        duration_s: args.duration.as_secs_f64(),
        operations: run.recorder.lock().expect("recorder lock").summary(),
        orders,
        stock,
    };
    print_summary(&summary);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(summary.stock.conserved != Some(false))
}

fn print_summary(s: &Summary) {
    println!(
        "scenario {:?}, target {} req/s, {} virtual users, {:.1} s measured after {:.1} s warm-up",
        s.scenario, s.target_rate, s.vus, s.duration_s, s.warmup_s
    );
    println!(
        "{:<16} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8}  errors",
        "operation", "count", "rate/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for (name, op) in &s.operations {
        let errors: Vec<String> = op.errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!(
            "{name:<16} {:>8} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2}  {}",
            op.count,
            op.rate,
            op.p50_ms,
            op.p90_ms,
            op.p99_ms,
            op.max_ms,
            if errors.is_empty() {
                "-".to_owned()
            } else {
                errors.join(", ")
            }
        );
    }
    let o = &s.orders;
    println!(
        "orders: {} created, {} confirmed, {} rejected, {} cancelled, {} unfinished; {:.1} confirmed/s end to end (drained {:.1} s after the load)",
        o.created, o.confirmed, o.rejected, o.cancelled, o.unfinished, o.confirmed_per_s, o.drain_s
    );
    match s.stock.conserved {
        Some(true) => println!(
            "stock conserved: yes (before - units in CONFIRMED orders not cancelled == after, for every product of the run)"
        ),
        Some(false) => println!(
            "stock conserved: NO: {:?} (product: (expected, actual))",
            s.stock.mismatches
        ),
        None => println!("stock conserved: not checked: some orders were still unfinished"),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        runtime.worker_threads(args.threads);
    }
    let outcome = runtime
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(main_inner(args)));
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}
