//! `switchboard --check-config` in cluster mode: the `[cluster]` keys are validated (the key is
//! named) and the store must answer.

mod cluster_common;

use cluster_common::{Redis, TempDir, cluster_toml};

#[test]
fn check_config_validates_cluster_settings_and_reaches_the_store() -> anyhow::Result<()> {
    let redis = Redis::start()?;
    let dir = TempDir::new("check");
    let run = |toml: &str| {
        let p = dir.0.join("c.toml");
        std::fs::write(&p, toml).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("--config")
            .arg(&p)
            .arg("--check-config")
            .output()
            .unwrap()
    };
    let good = cluster_toml(&redis.url(), "check", "a");
    let out = run(&good);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("store answers"), "{stdout}");
    // A renewal period that would let a healthy owner fence after one slow renewal.
    let out = run(&good.replace("renew_ms = 500", "renew_ms = 2000"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cluster.renew_ms"));
    let out = run(&good.replace("redis://", "http://"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cluster.redis_url"));
    let out = run(&good.replace(
        "rampup_penalty = 2",
        "rampup_penalty = 2\nregion = \"eu west\"",
    ));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cluster.region"),
        "{out:?}"
    );
    let out = run(&good.replace(
        "rampup_penalty = 2",
        "rampup_penalty = 2\nregion = \"eu-west\"",
    ));
    assert!(out.status.success(), "{out:?}");
    // A store that does not answer.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let out = run(&good.replace(&redis.url(), &format!("redis://127.0.0.1:{port}")));
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cluster store unavailable"));
    Ok(())
}
