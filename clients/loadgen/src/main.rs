//! The `switchboard-loadgen` binary: parse the command line, run, print the table (or JSON).

use std::time::Duration;

use anyhow::{Context, bail};
use switchboard_loadgen::{Options, Ramp, Target};

const USAGE: &str = "\
usage: switchboard-loadgen [options]

  --target switchboard|chat   the SFU under test (default switchboard)
  --url URL                   gRPC endpoint (default http://127.0.0.1:50051) or chat's
                              HTTPS endpoint (default https://127.0.0.1:3000/)
  --api-key KEY               Switchboard API key
  --rooms N                   rooms (default 1; chat: 1)
  --publishers N              publishers per room (default 1); 0 = idle Sessions: subscribers
                              of rooms where nobody publishes (for memory per idle Session)
  --subscribers N             subscribers per room (default 10; with --ramp the first step)
  --simulcast                 publish video as three simulcast layers
  --settle SECS               wait after joining before measuring (default 3)
  --duration SECS             measurement window (default 5)
  --ramp STEP                 add STEP subscribers per room per step until > 1 % loss or
                              > 1 % of packets over 500 ms late (idle: until a Session fails
                              to connect); report the knee, the first step past it, and the
                              SFU's RSS growth per added Session below the knee
  --ramp-max N                stop ramping at N subscribers per room (default 2000)
  --ramp-past N               measure N overloaded steps before stopping (default 1)
  --gateway-pid PID           the SFU's process: CPU time and RSS from /proc
  --concurrency N             joins in flight at once (default 25)
  --room-max-sessions N       Switchboard: max_sessions of each room (default 1000); joins the
                              SFU refuses (RESOURCE_EXHAUSTED) are counted, not fatal
  --json                      print the report as JSON on stdout (the table goes to stderr)
  --quiet                     no progress lines";

fn main() -> anyhow::Result<()> {
    let mut o = Options::default();
    let mut target = "switchboard".to_string();
    let (mut url, mut api_key) = (None::<String>, String::new());
    let (mut ramp_step, mut ramp_max, mut ramp_past) = (None::<usize>, 2000, 1);
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--target" => target = val()?,
            "--url" => url = Some(val()?),
            "--api-key" => api_key = val()?,
            "--rooms" => o.rooms = val()?.parse()?,
            "--publishers" => o.publishers = val()?.parse()?,
            "--subscribers" => o.subscribers = val()?.parse()?,
            "--simulcast" => o.simulcast = true,
            "--settle" => o.settle = Duration::from_secs_f64(val()?.parse()?),
            "--duration" => o.window = Duration::from_secs_f64(val()?.parse()?),
            "--ramp" => ramp_step = Some(val()?.parse()?),
            "--ramp-max" => ramp_max = val()?.parse()?,
            "--ramp-past" => ramp_past = val()?.parse()?,
            "--gateway-pid" | "--sfu-pid" => o.sfu_pid = Some(val()?.parse()?),
            "--concurrency" => o.join_concurrency = val()?.parse()?,
            "--room-max-sessions" => o.max_sessions = val()?.parse()?,
            "--json" => json = true,
            "--quiet" => o.progress = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    o.target = match target.as_str() {
        "switchboard" => Target::Switchboard {
            url: url.unwrap_or_else(|| "http://127.0.0.1:50051".into()),
            api_key,
        },
        "chat" => Target::Chat {
            url: url.unwrap_or_else(|| "https://127.0.0.1:3000/".into()),
        },
        other => bail!("unknown target {other:?}\n{USAGE}"),
    };
    o.ramp = ramp_step.map(|step| Ramp {
        step,
        max: ramp_max,
        past: ramp_past,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(switchboard_loadgen::run(&o))?;
    if json {
        eprint!("{}", report.table());
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
