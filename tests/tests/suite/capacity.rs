//! The host at capacity: when more runs are started than the instance pool
//! holds, the excess runs fail as the host's problem (not the plugin's),
//! the runs in flight finish normally, and the pool serves again afterwards.

use std::sync::Arc;
use std::time::SystemTime;

use vigil_host::model::Resource;
use vigil_host::plugin::PluginManifest;
use vigil_host::sandbox::{RunContext, RunInput, RunOutcome, Sandbox, SandboxSettings, TrapReason};
use vigil_host::site::SiteConfig;
use vigil_tests::{PluginFile, artifacts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_fails_runs_as_host_failures_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = SiteConfig {
        cache_dir: dir.path().join("cache"),
        max_concurrent_runs: 2,
        ..SiteConfig::embedded()
    };
    let sandbox = Arc::new(Sandbox::new(&SandboxSettings::from_site(&site)).expect("sandbox"));
    let sleeper = PluginFile::new("sleeper", "polling", artifacts::FIXTURE_HOSTILE)
        .set("fixture", "behaviour", "sleep-forever")
        .set("sandbox", "deadline", "1s")
        .write(dir.path(), "sleeper");
    let sleeper = Arc::new(
        sandbox
            .prepare(Arc::new(
                PluginManifest::load(&sleeper, &site.plugin_policy()).expect("manifest"),
            ))
            .expect("prepare"),
    );

    let runs: Vec<_> = (0..4)
        .map(|i| {
            let (sandbox, plugin) = (sandbox.clone(), sleeper.clone());
            tokio::spawn(async move {
                let context = RunContext::new(SystemTime::now(), None);
                sandbox
                    .run(
                        &plugin,
                        RunInput::Poll(Resource::named(&format!("r{i}"), "127.0.0.1").into()),
                        context,
                    )
                    .await
            })
        })
        .collect();
    let mut deadlines = 0;
    let mut host_failures = 0;
    for run in runs {
        match run.await.expect("run task").outcome {
            RunOutcome::Trap(TrapReason::Deadline { .. }) => deadlines += 1,
            RunOutcome::HostFailure(message) => {
                assert!(message.contains("concurrent"), "{message}");
                host_failures += 1;
            }
            other => panic!("unexpected outcome {other}"),
        }
    }
    assert_eq!((deadlines, host_failures), (2, 2));

    // Slots are returned: a well-behaved plugin runs normally afterwards.
    let heartbeat = PluginFile::new("heartbeat", "polling", artifacts::HEARTBEAT)
        .write(dir.path(), "heartbeat");
    let heartbeat = sandbox
        .prepare(Arc::new(
            PluginManifest::load(&heartbeat, &site.plugin_policy()).expect("manifest"),
        ))
        .expect("prepare");
    let context = RunContext::new(SystemTime::now(), None);
    let report = sandbox
        .run(
            &heartbeat,
            RunInput::Poll(Resource::named("after", "127.0.0.1").into()),
            context,
        )
        .await;
    assert!(report.outcome.is_ok(), "{}", report.outcome);
}
