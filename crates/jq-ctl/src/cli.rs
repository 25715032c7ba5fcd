//! The command line, parsed into plain values (no I/O here), so parsing is
//! tested on its own.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Root help footer: examples and the exit codes scripts rely on.
pub const ROOT_HELP: &str = "\
Examples:
  jq-ctl job submit --queue default '{\"command\":[\"echo\",\"hi\"]}'
  jq-ctl job status 3f0c2a4e-8d1b-4e7a-9c55-0b1d2e3f4a5b
  jq-ctl job list --status DEAD_LETTERED -o json
  jq-ctl status

Exit codes:
  0  success
  1  the server refused or failed the request (e.g. NOT_FOUND, FAILED_PRECONDITION)
  2  usage error: bad flags, arguments or input files (nothing was sent)
  3  cannot reach the server, or no answer within --timeout

Environment: JQ_SERVER_ADDR, JQ_TOKEN, JQ_TLS_CA, JQ_TLS_CERT, JQ_TLS_KEY; NO_COLOR disables colours.";

#[derive(Parser, Debug)]
#[command(
    name = "jq-ctl",
    about = "Operate a jq job queue: submit and inspect jobs, manage queues and workers.",
    disable_version_flag = true,
    after_help = ROOT_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    /// Print jq-ctl's version and commit, and the server's when reachable.
    #[arg(short = 'V', long = "version")]
    pub version: bool,
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// jq-server address: host:port, http://host:port or https://host:port.
    #[arg(
        long,
        global = true,
        env = "JQ_SERVER_ADDR",
        default_value = "localhost:50051"
    )]
    pub server_addr: String,
    /// PEM client certificate (mTLS).
    #[arg(long, global = true, value_name = "FILE", env = "JQ_TLS_CERT")]
    pub tls_cert: Option<String>,
    /// PEM client key (mTLS).
    #[arg(long, global = true, value_name = "FILE", env = "JQ_TLS_KEY")]
    pub tls_key: Option<String>,
    /// PEM CA that signed the server certificate; turns TLS on.
    #[arg(long, global = true, value_name = "FILE", env = "JQ_TLS_CA")]
    pub tls_ca: Option<String>,
    /// Bearer token (JQ-170).
    #[arg(long, global = true, env = "JQ_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Give up on the server after this long (e.g. 10s, 500ms, 1m).
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Submit, inspect, cancel, retry and follow jobs.
    #[command(subcommand)]
    Job(JobCmd),
    /// Create, inspect, pause and delete queues.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// List, drain and shut down workers.
    #[command(subcommand)]
    Worker(WorkerCmd),
    /// Periodic schedules: a job at every occurrence of a cron pattern
    /// (JQ-124).
    #[command(subcommand)]
    Schedule(ScheduleCmd),
    /// Server health, dependencies, workers and queue depths (FR-042).
    #[command(after_help = "Example:\n  jq-ctl status -o json")]
    Status,
    /// Print jq-ctl's version and commit, and the server's when reachable.
    #[command(after_help = "Example:\n  jq-ctl version")]
    Version,
}

#[derive(Subcommand, Debug)]
pub enum JobCmd {
    /// Submit one job (prints its id) or many from an NDJSON file (prints one id per line).
    #[command(after_help = "\
Examples:
  jq-ctl job submit --queue default '{\"command\":[\"echo\",\"hi\"]}'
  jq-ctl job submit --queue emails --priority 9 --payload-file job.json
  jq-ctl job submit --queue default --delay 5m --idempotency-key order-42 '{\"handler\":\"noop\"}'
  jq-ctl job submit --file jobs.ndjson

NDJSON lines: {\"payload\": <any JSON>, \"queue\": \"q\", \"priority\": 0-9, \"max_retries\": n,
\"ttl_seconds\": n, \"delay_ms\": n, \"idempotency_key\": \"k\"}; only payload is required and
queue defaults to --queue. Each batch of up to 10,000 lines is all-or-nothing.")]
    Submit(Submit),
    /// Show one job: status, payload, result, retries and times (FR-030).
    #[command(after_help = "Example:\n  jq-ctl job status 3f0c2a4e-8d1b-4e7a-9c55-0b1d2e3f4a5b --full")]
    Status {
        job_id: String,
        /// Show payload and result in full instead of truncated.
        #[arg(long)]
        full: bool,
    },
    /// Cancel a job: PENDING/ASSIGNED at once, RUNNING once its worker stops it.
    #[command(after_help = "Example:\n  jq-ctl job cancel 3f0c2a4e-8d1b-4e7a-9c55-0b1d2e3f4a5b")]
    Cancel { job_id: String },
    /// List jobs, newest first, a page at a time (FR-032).
    #[command(after_help = "\
Examples:
  jq-ctl job list --queue emails --status DEAD_LETTERED
  jq-ctl job list --limit 100 --page-token <token from the previous page>")]
    List {
        #[arg(long, short)]
        queue: Option<String>,
        #[arg(long, short, value_enum)]
        status: Option<StatusArg>,
        /// Page size (1-1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Continue from a previous page.
        #[arg(long)]
        page_token: Option<String>,
        /// Show payloads in full instead of truncated.
        #[arg(long)]
        full: bool,
    },
    /// A job's transitions in order, with times and reasons (FR-031).
    #[command(after_help = "Example:\n  jq-ctl job logs 3f0c2a4e-8d1b-4e7a-9c55-0b1d2e3f4a5b")]
    Logs { job_id: String },
    /// Retry a DEAD_LETTERED or FAILED job, or redrive many with --queue (JQ-150).
    #[command(after_help = "\
Examples:
  jq-ctl job retry 3f0c2a4e-8d1b-4e7a-9c55-0b1d2e3f4a5b
  jq-ctl job retry --queue emails --status DEAD_LETTERED --limit 500")]
    Retry(Retry),
    /// Follow a job until it is terminal, printing each transition.
    #[command(after_help = "Example:\n  jq-ctl job watch 3f0c2a4e-8d1b-4e7a-9c55-0b1d2e3f4a5b")]
    Watch { job_id: String },
    /// Delete a job in a terminal state (DONE or DEAD_LETTERED).
    #[command(after_help = "Example:\n  jq-ctl job delete 3f0c2a4e-8d1b-4e7a-9c55-0b1d2e3f4a5b")]
    Delete { job_id: String },
}

#[derive(Args, Debug)]
pub struct Submit {
    /// The payload (JSON by convention); or use --payload-file / --file.
    #[arg(conflicts_with_all = ["payload_file", "file"])]
    pub payload: Option<String>,
    /// Read the payload from a file ("-" for stdin).
    #[arg(long, value_name = "FILE", conflicts_with = "file")]
    pub payload_file: Option<PathBuf>,
    /// Submit every line of an NDJSON file ("-" for stdin) in bulk (JQ-102).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    #[arg(long, short, default_value = "default")]
    pub queue: String,
    /// 0-9, 9 runs first (default 0).
    #[arg(long, short, value_parser = clap::value_parser!(i32).range(0..=9))]
    pub priority: Option<i32>,
    /// Retries after the first attempt (default: the queue's).
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..=1000))]
    pub max_retries: Option<i32>,
    /// Dead-letter the job if it has not started within this long (e.g. 10m).
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// Do not run before this long from now (e.g. 30s).
    #[arg(long, value_parser = parse_duration, conflicts_with = "run_at")]
    pub delay: Option<Duration>,
    /// Do not run before this time (RFC 3339, e.g. 2026-12-01T09:00:00Z).
    #[arg(long, value_parser = parse_time)]
    pub run_at: Option<DateTime<Utc>>,
    /// A repeat with the same key in the queue returns the first job's id.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

#[derive(Args, Debug)]
pub struct Retry {
    /// The job to retry; or use --queue to redrive many.
    #[arg(required_unless_present = "queue", conflicts_with_all = ["queue", "status", "limit"])]
    pub job_id: Option<String>,
    /// Redrive jobs of this queue.
    #[arg(long, short)]
    pub queue: Option<String>,
    /// Which jobs to redrive (default DEAD_LETTERED).
    #[arg(long, short, value_enum, requires = "queue")]
    pub status: Option<StatusArg>,
    /// At most this many, oldest first (default 1000).
    #[arg(long, requires = "queue", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: Option<u32>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StatusArg {
    Pending,
    Assigned,
    Running,
    Done,
    Failed,
    DeadLettered,
}

#[derive(Subcommand, Debug)]
pub enum QueueCmd {
    /// All queues and their settings.
    #[command(after_help = "Example:\n  jq-ctl queue list -o yaml")]
    List,
    /// One queue's settings, retention included.
    #[command(after_help = "Example:\n  jq-ctl queue get emails -o json")]
    Get { name: String },
    /// Create a queue (FR-025).
    #[command(
        after_help = "Example:\n  jq-ctl queue create emails --max-retries 5 --ttl 1h --concurrency-limit 10\n  jq-ctl queue create audit --retain-done 1h --retain-dead 30d\n  jq-ctl queue create reports --priority-weights 9:8,5:3,0:1"
    )]
    Create {
        name: String,
        #[command(flatten)]
        settings: QueueFlags,
    },
    /// Change a queue's settings; unset flags stay as they are.
    #[command(after_help = "Example:\n  jq-ctl queue update emails --rate-limit 50")]
    Update {
        name: String,
        #[command(flatten)]
        settings: QueueFlags,
    },
    /// Delete a queue; refused while it has jobs unless --force (FR-026).
    #[command(after_help = "Example:\n  jq-ctl queue delete old-queue --force")]
    Delete {
        name: String,
        /// Delete its jobs too.
        #[arg(long)]
        force: bool,
    },
    /// Depth by status, processed total, average time, error rate (FR-028).
    #[command(after_help = "Example:\n  jq-ctl queue stats default")]
    Stats { name: String },
    /// Stop dispatching from a queue; nothing is lost (JQ-122).
    #[command(after_help = "Example:\n  jq-ctl queue pause emails")]
    Pause { name: String },
    /// Dispatch from a paused queue again.
    #[command(after_help = "Example:\n  jq-ctl queue resume emails")]
    Resume { name: String },
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCmd {
    /// Create a schedule; PAYLOAD is the job's payload.
    #[command(
        after_help = "Example:\n  jq-ctl schedule create nightly --cron '0 3 * * *' --timezone Europe/Berlin -q reports '{\"handler\":\"report\"}'\n  jq-ctl schedule create heartbeat --cron '*/10 * * * * *' --overlap skip '{\"command\":[\"true\"]}'"
    )]
    Create {
        name: String,
        /// The job's payload (JSON by convention).
        payload: String,
        #[command(flatten)]
        flags: ScheduleFlags,
    },
    /// All schedules, their next and last occurrences.
    #[command(after_help = "Example:\n  jq-ctl schedule list -o yaml")]
    List,
    /// One schedule in full.
    #[command(after_help = "Example:\n  jq-ctl schedule get nightly -o json")]
    Get { name: String },
    /// Change a schedule; unset flags stay as they are.
    #[command(after_help = "Example:\n  jq-ctl schedule update nightly --cron '30 3 * * *'")]
    Update {
        name: String,
        #[command(flatten)]
        flags: ScheduleFlags,
        /// A new payload.
        #[arg(long)]
        payload: Option<String>,
    },
    /// Fire nothing until resumed.
    #[command(after_help = "Example:\n  jq-ctl schedule pause nightly")]
    Pause { name: String },
    /// Go on from the next occurrence after now (a pause is not caught up).
    #[command(after_help = "Example:\n  jq-ctl schedule resume nightly")]
    Resume { name: String },
    /// Delete a schedule; its jobs stay.
    #[command(after_help = "Example:\n  jq-ctl schedule delete nightly")]
    Delete { name: String },
    /// Fire one occurrence now, off the pattern.
    #[command(after_help = "Example:\n  jq-ctl schedule trigger nightly")]
    Trigger { name: String },
}

#[derive(Args, Debug, Default)]
pub struct ScheduleFlags {
    /// Cron pattern: 5 fields (minute hour day-of-month month day-of-week),
    /// 6 with seconds first, or @hourly, @daily, @weekly, @monthly, @yearly.
    #[arg(long)]
    pub cron: Option<String>,
    /// IANA time zone the pattern is read in (default UTC).
    #[arg(long)]
    pub timezone: Option<String>,
    /// The queue of its jobs (on create, default "default").
    #[arg(long, short)]
    pub queue: Option<String>,
    /// 0-9, 9 runs first.
    #[arg(long, short, value_parser = clap::value_parser!(i32).range(0..=9))]
    pub priority: Option<i32>,
    /// Retries after the first attempt (`default`: the queue's).
    #[arg(long, value_parser = parse_schedule_retries)]
    pub max_retries: Option<i32>,
    /// Dead-letter a job not started within this long (0: the queue's).
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// Occurrences missed while no server ran: skip, once (default) or all
    /// (at most 100).
    #[arg(long, value_parser = ["skip", "once", "all"])]
    pub missed: Option<String>,
    /// allow (default), or skip: no occurrence while the previous one's
    /// job has not finished.
    #[arg(long, value_parser = ["allow", "skip"])]
    pub overlap: Option<String>,
}

/// `default` (-1 on the wire: the queue's) or 0-1000.
fn parse_schedule_retries(s: &str) -> Result<i32, String> {
    match s.trim() {
        "default" => Ok(-1),
        n => match n.parse::<i32>() {
            Ok(v) if (0..=1000).contains(&v) => Ok(v),
            _ => Err(format!("{n:?} is not 0-1000 or `default`")),
        },
    }
}

#[derive(Args, Debug, Default)]
pub struct QueueFlags {
    /// Default retries of its jobs.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub max_retries: Option<u32>,
    /// Default TTL of its jobs (e.g. 1h; 0 clears it).
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// Default execution timeout of its jobs, handed to workers (e.g. 10m;
    /// 0 clears it). Not the global --timeout, which bounds this call.
    #[arg(long, value_parser = parse_duration)]
    pub job_timeout: Option<Duration>,
    /// Retry backoff base (e.g. 5s).
    #[arg(long, value_parser = parse_duration)]
    pub backoff_base: Option<Duration>,
    /// Retry backoff cap (e.g. 5m).
    #[arg(long, value_parser = parse_duration)]
    pub backoff_max: Option<Duration>,
    /// Most ASSIGNED+RUNNING jobs across the cluster (0 clears it).
    #[arg(long)]
    pub concurrency_limit: Option<u32>,
    /// Most dispatches per second across the cluster (0 clears it).
    #[arg(long)]
    pub rate_limit: Option<f64>,
    /// How long its DONE jobs are kept after they finished (e.g. 1h, 7d;
    /// `keep` until deleted, `default` for the server's retention.done_s).
    #[arg(long, value_parser = parse_retention)]
    pub retain_done: Option<i64>,
    /// How long its dead letters are kept (e.g. 30d; `keep`, the server's
    /// default, keeps them until deleted: FR-035).
    #[arg(long, value_parser = parse_retention)]
    pub retain_dead: Option<i64>,
    /// Shares between priority bands, each named by its lowest priority:
    /// `9:8,5:3,0:1` gives band 9 eight dispatches, band 5-8 three and band
    /// 0-4 one in every twelve while all have work (FR-025); `strict`
    /// clears them (highest priority first, the default).
    #[arg(long, value_parser = parse_priority_weights)]
    pub priority_weights: Option<String>,
}

/// Priority weights on the wire: the canonical form, or "" for `strict`.
pub fn parse_priority_weights(s: &str) -> Result<String, String> {
    match s.trim() {
        "strict" => Ok(String::new()),
        text => jq_core::weights::PriorityWeights::parse(text)
            .map(|w| w.to_string())
            .map_err(|e| e.to_string()),
    }
}

/// A retention on the wire: `default` -1, `keep` 0, a duration in seconds
/// (at least one).
pub fn parse_retention(s: &str) -> Result<i64, String> {
    match s.trim() {
        "default" => Ok(-1),
        "keep" | "forever" => Ok(0),
        other => {
            let d = parse_duration(other)?;
            if d.as_secs() == 0 {
                return Err(format!(
                    "{other:?} is under a second; use `keep` to keep jobs until deleted"
                ));
            }
            Ok(d.as_secs() as i64)
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum WorkerCmd {
    /// Registered workers (add --all for OFFLINE ones).
    #[command(after_help = "Example:\n  jq-ctl worker list --all")]
    List {
        #[arg(long)]
        all: bool,
    },
    /// Let a worker finish its jobs and take no new ones (FR-023).
    #[command(after_help = "Example:\n  jq-ctl worker drain worker-a")]
    Drain { worker_id: String },
    /// Let a worker finish its jobs, then exit (FR-024).
    #[command(after_help = "Example:\n  jq-ctl worker shutdown worker-a")]
    Shutdown { worker_id: String },
}

/// `10s`, `500ms`, `5m`, `2h`, `1d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; use e.g. 10s, 500ms, 5m, 2h"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}; use ms, s, m, h or d")),
    };
    if !secs.is_finite() || secs > 10.0 * 365.0 * 86400.0 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{s:?} is not an RFC 3339 time, e.g. 2026-12-01T09:00:00Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("jq-ctl").chain(args.split_whitespace()))
    }

    #[test]
    fn jq_105_no_subcommand_option_shares_a_name_with_a_global_one() {
        use clap::CommandFactory;
        let root = Cli::command();
        let globals: Vec<(Option<String>, Option<char>)> = root
            .get_arguments()
            .filter(|a| a.is_global_set())
            .map(|a| (a.get_long().map(str::to_string), a.get_short()))
            .collect();
        assert!(globals.iter().any(|(l, _)| l.as_deref() == Some("timeout")));
        // The tree as declared: globals live on the root only until clap
        // propagates them, so every argument below is the subcommand's own.
        fn walk(
            c: &clap::Command,
            path: String,
            globals: &[(Option<String>, Option<char>)],
            clashes: &mut Vec<String>,
        ) {
            for a in c.get_arguments() {
                for (l, sh) in globals {
                    if a.get_long().is_some() && a.get_long() == l.as_deref() {
                        clashes.push(format!("{path} --{}", a.get_long().unwrap()));
                    }
                    if a.get_short().is_some() && a.get_short() == *sh {
                        clashes.push(format!("{path} -{}", a.get_short().unwrap()));
                    }
                }
            }
            for sub in c.get_subcommands() {
                walk(sub, format!("{path} {}", sub.get_name()), globals, clashes);
            }
        }
        let mut clashes = vec![];
        for sub in root.get_subcommands() {
            walk(sub, sub.get_name().to_string(), &globals, &mut clashes);
        }
        assert!(
            clashes.is_empty(),
            "subcommand options shadowing a global one: {clashes:?}"
        );
    }

    #[test]
    fn fr_035_retention_flags_parse_to_their_wire_form() {
        let c = parse("queue update z --retain-done 1h --retain-dead keep").unwrap();
        let Some(Cmd::Queue(QueueCmd::Update { settings, .. })) = c.command else {
            panic!("not a queue update")
        };
        assert_eq!(
            (settings.retain_done, settings.retain_dead),
            (Some(3600), Some(0))
        );
        let c = parse("queue create z --retain-dead 30d --retain-done default").unwrap();
        let Some(Cmd::Queue(QueueCmd::Create { settings, .. })) = c.command else {
            panic!("not a queue create")
        };
        assert_eq!(
            (settings.retain_done, settings.retain_dead),
            (Some(-1), Some(30 * 86_400))
        );
        for bad in ["0", "500ms", "soon", "-1"] {
            assert!(
                parse(&format!("queue update z --retain-done {bad}")).is_err(),
                "{bad}"
            );
        }
        let c = parse("queue get z").unwrap();
        assert!(matches!(c.command, Some(Cmd::Queue(QueueCmd::Get { name })) if name == "z"));
    }

    #[test]
    fn jq_105_queue_job_timeout_and_the_call_timeout_are_apart() {
        let c = parse("--timeout 3s queue create z --job-timeout 10m").unwrap();
        assert_eq!(c.global.timeout, Duration::from_secs(3));
        let Some(Cmd::Queue(QueueCmd::Create { settings, .. })) = c.command else {
            panic!("not a queue create")
        };
        assert_eq!(settings.job_timeout, Some(Duration::from_secs(600)));
        let c = parse("queue create z --timeout 3s").unwrap();
        let Some(Cmd::Queue(QueueCmd::Create { settings, .. })) = c.command else {
            panic!("not a queue create")
        };
        assert_eq!(
            settings.job_timeout, None,
            "--timeout is the call's deadline only"
        );
        assert_eq!(c.global.timeout, Duration::from_secs(3));
    }

    #[test]
    fn nfr_004_globals_have_their_defaults_and_go_anywhere() {
        let c = parse("status").unwrap();
        assert_eq!(c.global.timeout, Duration::from_secs(10));
        assert_eq!(c.global.output, Format::Table);
        let c = parse("job list -o json --timeout 500ms --server-addr h:1").unwrap();
        assert_eq!(c.global.output, Format::Json);
        assert_eq!(c.global.timeout, Duration::from_millis(500));
        assert_eq!(c.global.server_addr, "h:1");
    }

    #[test]
    fn fr_002_priority_outside_0_to_9_is_a_usage_error() {
        let e = parse("job submit --priority 10 {}").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("10 is not in 0..=9"), "{e}");
        let Cmd::Job(JobCmd::Submit(s)) = parse("job submit -p 9 -q emails {}").unwrap().command.unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (s.priority, s.queue.as_str(), s.payload.as_deref()),
            (Some(9), "emails", Some("{}"))
        );
    }

    #[test]
    fn jq_102_payload_sources_are_exclusive() {
        assert!(parse("job submit {} --file a.ndjson").is_err());
        assert!(parse("job submit --payload-file p.json --file a.ndjson").is_err());
        assert!(parse("job submit --delay 5s --run-at 2026-12-01T09:00:00Z {}").is_err());
        let Cmd::Job(JobCmd::Submit(s)) = parse("job submit --file a.ndjson").unwrap().command.unwrap()
        else {
            panic!()
        };
        assert_eq!(s.file.unwrap(), PathBuf::from("a.ndjson"));
    }

    #[test]
    fn jq_150_retry_takes_an_id_or_a_queue_filter_not_both() {
        assert!(parse("job retry").is_err());
        assert!(parse("job retry abc --queue q").is_err());
        assert!(
            parse("job retry --status DEAD_LETTERED").is_err(),
            "status needs --queue"
        );
        let Cmd::Job(JobCmd::Retry(r)) = parse("job retry --queue q --status DEAD_LETTERED --limit 5")
            .unwrap()
            .command
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (r.queue.as_deref(), r.status, r.limit),
            (Some("q"), Some(StatusArg::DeadLettered), Some(5))
        );
    }

    #[test]
    fn fr_032_list_limit_is_bounded() {
        assert!(parse("job list --limit 0").is_err());
        assert!(parse("job list --limit 1001").is_err());
        let Cmd::Job(JobCmd::List { limit, status, .. }) =
            parse("job list -s PENDING").unwrap().command.unwrap()
        else {
            panic!()
        };
        assert_eq!((limit, status), (20, Some(StatusArg::Pending)));
    }

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999d").is_err());
    }

    #[test]
    fn nfr_016_every_command_has_help_with_an_example() {
        use clap::CommandFactory;
        let root = Cli::command();
        fn walk(c: &clap::Command, path: &str) {
            let name = format!("{path} {}", c.get_name());
            if c.get_subcommands().next().is_none() {
                let help = c.get_after_help().map(|h| h.to_string()).unwrap_or_default();
                assert!(help.contains("jq-ctl "), "{name} has no example");
            }
            for s in c.get_subcommands() {
                if s.get_name() != "help" {
                    walk(s, &name);
                }
            }
        }
        walk(&root, "");
        root.debug_assert();
    }
}
