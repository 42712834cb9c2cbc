//! The Kubernetes manifests of deploy/kubernetes, parsed (no cluster runs here) and checked for
//! the fields that make a distributed run work: the Secret the URLs come from, the coordinator
//! run once, the workers an Indexed Job running `barge worker` on the coordinator's run, resource
//! requests, and a pipeline that parses.

use std::path::PathBuf;

use yaml_rust2::{Yaml, YamlLoader};

fn manifest(name: &str) -> Yaml {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(docs.len(), 1, "{name}: one document");
    docs.remove(0)
}

fn text<'a>(yaml: &'a Yaml, what: &str) -> &'a str {
    yaml.as_str().unwrap_or_else(|| panic!("{what}: not a string: {yaml:?}"))
}

/// The container of a Job, checked to take the URLs from the Secret and to request resources.
fn container<'a>(job: &'a Yaml, name: &str) -> &'a Yaml {
    assert_eq!(text(&job["apiVersion"], "apiVersion"), "batch/v1", "{name}");
    assert_eq!(text(&job["kind"], "kind"), "Job", "{name}");
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(text(&container["envFrom"][0]["secretRef"]["name"], "secret"), "barge-urls", "{name}");
    let requests = &container["resources"]["requests"];
    assert!(requests["cpu"].as_str().is_some() && requests["memory"].as_str().is_some(), "{name}: {requests:?}");
    container
}

fn command(container: &Yaml) -> Vec<String> {
    container["command"].as_vec().expect("a command").iter().map(|a| text(a, "argument").to_string()).collect()
}

#[test]
fn the_kubernetes_manifests_run_a_coordinator_once_and_an_indexed_job_of_workers_on_its_run() {
    let secret = manifest("secret.yaml");
    assert_eq!(text(&secret["kind"], "kind"), "Secret");
    let data = secret["stringData"].as_hash().expect("stringData");
    let keys: Vec<&str> = data.keys().map(|k| text(k, "key")).collect();
    assert_eq!(keys, ["BARGE_STATE", "BARGE_SOURCE", "BARGE_TARGET"]);

    // The pipeline the coordinator mounts parses, its URLs from the Secret's variables.
    let config = manifest("pipeline.yaml");
    assert_eq!(text(&config["kind"], "kind"), "ConfigMap");
    let (file, body) = config["data"].as_hash().expect("data").iter().next().expect("a pipeline");
    let file = text(file, "file name");
    let env = |name: &str| keys.contains(&name).then(|| format!("postgres://u@{}:5432/db", name.to_lowercase()));
    let pipeline = barge_pipeline::Pipeline::parse(text(body, "pipeline"), std::path::Path::new(file), &env)
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(pipeline.source, "postgres://u@barge_source:5432/db");
    let run_name = file.trim_end_matches(".toml");

    let coordinator = manifest("coordinator-job.yaml");
    let c = container(&coordinator, "coordinator");
    let args = command(c);
    assert_eq!(args[..3], ["barge", "run", &format!("/etc/barge/{file}")]);
    for flag in ["--distributed", "--state", "$(BARGE_STATE)"] {
        assert!(args.iter().any(|a| a == flag), "coordinator: {args:?}");
    }
    let pod = &coordinator["spec"]["template"]["spec"];
    assert_eq!(text(&pod["restartPolicy"], "restartPolicy"), "Never");
    assert_eq!(coordinator["spec"]["backoffLimit"].as_i64(), Some(0));
    assert_eq!(text(&pod["volumes"][0]["configMap"]["name"], "configMap"), "barge-pipeline");
    assert_eq!(text(&c["volumeMounts"][0]["mountPath"], "mountPath"), "/etc/barge");

    let workers = manifest("workers-job.yaml");
    let w = container(&workers, "workers");
    let args = command(w);
    assert_eq!(args[..2], ["barge", "worker"]);
    let value = |flag: &str| args.iter().position(|a| a == flag).map(|i| args[i + 1].clone());
    assert_eq!(value("--state").as_deref(), Some("$(BARGE_STATE)"));
    assert_eq!(value("--run").as_deref(), Some(run_name), "workers work on the coordinator's run");
    assert!(value("--name").is_some_and(|n| n.contains("$(JOB_COMPLETION_INDEX)")), "{args:?}");
    let slots: u64 = value("--workers").expect("--workers").parse().unwrap();
    let spec = &workers["spec"];
    assert_eq!(text(&spec["completionMode"], "completionMode"), "Indexed");
    assert_eq!(spec["completions"].as_i64(), spec["parallelism"].as_i64());
    assert_eq!(text(&spec["template"]["spec"]["restartPolicy"], "restartPolicy"), "OnFailure");
    // One CPU requested per range a pod copies at once.
    assert_eq!(text(&w["resources"]["requests"]["cpu"], "cpu").parse::<u64>().unwrap(), slots);
}
