#!/usr/bin/env python3
"""Check that a compose stack runs what a lab ran, service by service.

    compare.py LAB_INSPECT.json COMPOSE_PROJECT

LAB_INSPECT.json is `docker inspect` of every container of the lab the
compose file was generated from (saved by run.sh before that lab was
removed); COMPOSE_PROJECT names the running compose stack. For each service
(label scaling-lab.service on one side, com.docker.compose.service on the
other) compares what decides how the container runs: image, command,
entrypoint, user, hostname, the environment as set (the same secrets: the
file was generated from that very lab), health check, init, stop timeout,
CPU and memory limits, capabilities, privileged, restart policy, exposed
ports, which ports are published and that every one binds 127.0.0.1 only,
the mounts (the same volume paths; the balancer's file, which the lab copies
into its container, is a read-only bind mount under compose), and that the
service is on one network under its own name. Labels and names differ by
design and are not compared.

Prints one line per difference and exits 1 if there is any; else one line
saying what matched. Standard library only.
"""

import json
import subprocess
import sys

BALANCER_CONFIG = "/etc/lab/balancer.toml"


def docker(*args):
    r = subprocess.run(["docker", *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"error: docker {' '.join(args[:2])}: {r.stderr.strip()}")
    return r.stdout


def facts(c, service):
    cfg, host = c["Config"], c["HostConfig"]
    hc = cfg.get("Healthcheck") or {}
    binds = host.get("PortBindings") or {}
    nets = c["NetworkSettings"].get("Networks") or {}
    mounts = sorted((m["Type"], m["Destination"], bool(m.get("RW"))) for m in c.get("Mounts") or [])
    return {
        "image": cfg["Image"],
        "cmd": cfg.get("Cmd"),
        "entrypoint": cfg.get("Entrypoint"),
        "user": cfg.get("User", ""),
        "hostname": cfg.get("Hostname"),
        "env": sorted(cfg.get("Env") or []),
        "healthcheck": [hc.get(k) for k in ("Test", "Interval", "Timeout", "Retries", "StartPeriod")],
        "init": bool(host.get("Init")),
        "stop timeout": cfg.get("StopTimeout"),
        "cpus": host.get("NanoCpus") or 0,
        "memory": host.get("Memory") or 0,
        "cap_add": sorted(host.get("CapAdd") or []),
        "privileged": bool(host.get("Privileged")),
        "restart": (host.get("RestartPolicy") or {}).get("Name") or "no",
        "exposed": sorted(cfg.get("ExposedPorts") or {}),
        "published": sorted(binds),
        "host ips": sorted({b.get("HostIp") for bs in binds.values() for b in bs or []}),
        "mounts": mounts,
        "networks": len(nets),
        "alias": all(service in (n.get("Aliases") or []) for n in nets.values()),
    }


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    lab = {c["Config"]["Labels"]["scaling-lab.service"]: c for c in json.load(open(sys.argv[1]))}
    ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={sys.argv[2]}").split()
    compose = {c["Config"]["Labels"]["com.docker.compose.service"]: c
               for c in json.loads(docker("inspect", *ids))} if ids else {}
    diffs = []
    if sorted(lab) != sorted(compose):
        diffs.append(f"services: lab {sorted(lab)} vs compose {sorted(compose)}")
    for svc in sorted(set(lab) & set(compose)):
        a, b = facts(lab[svc], svc), facts(compose[svc], svc)
        if svc.startswith("lb-"):
            # Expected: the lab copies balancer.toml in, compose bind-mounts it.
            a["mounts"] = sorted(a["mounts"] + [("bind", BALANCER_CONFIG, False)])
        for k in a:
            if a[k] != b[k]:
                diffs.append(f"{svc} {k}: lab {a[k]!r} vs compose {b[k]!r}")
        if b["host ips"] not in ([], ["127.0.0.1"]):
            diffs.append(f"{svc}: compose publishes on {b['host ips']}, not only 127.0.0.1")
    for d in diffs:
        print(f"  DIFFERENT {d}")
    if diffs:
        sys.exit(1)
    print(f"  the compose twin matches the lab in all {len(lab)} services: image, command, user, hostname,"
          " environment, health check, init, stop timeout, limits, capabilities, restart policy,"
          " ports (127.0.0.1 only), mounts, one network under the service's name")


if __name__ == "__main__":
    main()
