#!/usr/bin/env python3
"""Write a docker-compose.yml that starts the same containers as a running lab.

    compose_from_lab.py LAB_NAME OUT_DIR

Reads every container of the lab (label scaling-lab.lab=LAB_NAME) with
`docker inspect` and writes OUT_DIR/docker-compose.yml (file format 2.4, which
docker-compose 1.29 reads) with, per container: the same image, the
environment the lab set (the image's own defaults are left to the image), the
same health check, init, hostname, stop timeout, limits, the same exposed ports
published on 127.0.0.1 with an ephemeral host port, a named volume where the
lab has one, and one named bridge network on which each service is reachable
by its lab name. The balancer's configuration file is copied out of its
container (`docker cp`) to OUT_DIR/balancer.toml and bind-mounted read-only.

`depends_on` reproduces the order in which `lab up` starts its groups (every
database node db-1..K and redis at once, then the servers, then the
balancer); like the lab, nothing waits for another service to be healthy
before starting it (a replica waits for the primary by itself).
COMPOSE_DEPENDS_ON=0 leaves it out (compose then starts everything at once).

Only what the default topology uses is reproduced. A lab this cannot copy
faithfully is refused with the reason: an unknown role (the start order
would be a guess), a mount other than a volume, a port not on 127.0.0.1, or
a fixed address on the network (an HA pair: keepalived's addresses need the
lab's subnet and ip_range, which a second network cannot share).

Prints the number of services on stdout. Standard library only; the YAML is
written by hand, every scalar as a JSON string (valid YAML), every `$` doubled
so that compose does not interpolate it.
"""

import json
import os
import subprocess
import sys

LAB_LABEL = "scaling-lab.lab"
SERVICE_LABEL = "scaling-lab.service"
ROLE_LABEL = "scaling-lab.role"
BALANCER_CONFIG = "/etc/lab/balancer.toml"
NETWORK = "labnet"
# The order `lab up` starts its groups in, keyed on the role label
# (lab/src/up.rs, fn group: each role's start_order in lab/src/roles/*.rs;
# the label values are Role::as_str in lab/src/topology.rs). Every database
# node is role "database" whatever its part (db-1 is the primary without a
# failover manager), and all of them start with redis.
GROUP = {"database": 0, "redis": 0, "server": 2, "lb": 3, "edge": 4}


def docker(*args, text=True):
    r = subprocess.run(["docker", *args], capture_output=True, text=text)
    if r.returncode != 0:
        err = r.stderr if text else r.stderr.decode(errors="replace")
        sys.exit(f"error: docker {' '.join(args[:2])}: {err.strip()}")
    return r.stdout


def q(s):
    """A YAML scalar: a JSON string, with compose's interpolation escaped."""
    return json.dumps(str(s).replace("$", "$$"))


def duration(ns):
    ns = int(ns or 0)
    if ns % 1_000_000_000 == 0:
        return f"{ns // 1_000_000_000}s"
    return f"{ns // 1_000_000}ms"


def service_of(c, lab):
    name = c["Config"]["Labels"].get(SERVICE_LABEL)
    return name or c["Name"].lstrip("/")[len(lab) + 1:]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    lab, out = sys.argv[1], sys.argv[2]
    ids = docker("ps", "-aq", "--filter", f"label={LAB_LABEL}={lab}").split()
    if not ids:
        sys.exit(f"error: no container of lab {lab!r}: start it first with `lab --lab {lab} up`")
    containers = json.loads(docker("inspect", *ids))
    for c in containers:
        role = c["Config"]["Labels"].get(ROLE_LABEL)
        if role not in GROUP:
            sys.exit(f"error: {c['Name'].lstrip('/')} has role {role!r}, which GROUP does not know: "
                     "read its start_order in lab/src/roles/ and add it")
        for net in (c["NetworkSettings"].get("Networks") or {}).values():
            if (net.get("IPAMConfig") or {}).get("IPv4Address"):
                sys.exit(f"error: {c['Name'].lstrip('/')} has a fixed address on the lab network "
                         "(an HA pair?): only the default topology is reproduced")
    images = {}
    for c in containers:
        img = c["Config"]["Image"]
        if img not in images:
            images[img] = json.loads(docker("image", "inspect", img))[0]["Config"]
    containers.sort(key=lambda c: (GROUP[c["Config"]["Labels"][ROLE_LABEL]], service_of(c, lab)))
    depends = os.environ.get("COMPOSE_DEPENDS_ON", "1") != "0"

    lines = ['version: "2.4"', "", "services:"]
    volumes = []
    for c in containers:
        cfg, host = c["Config"], c["HostConfig"]
        svc = service_of(c, lab)
        role = cfg["Labels"].get(ROLE_LABEL, "")
        icfg = images[cfg["Image"]]
        lines.append(f"  {svc}:")
        lines.append(f"    image: {q(cfg['Image'])}")
        lines.append(f"    hostname: {q(cfg.get('Hostname') or svc)}")
        # Only what differs from the image: the lab sets no entrypoint or
        # command of its own today, but a future one would be copied.
        for key, ckey in (("entrypoint", "Entrypoint"), ("command", "Cmd")):
            if cfg.get(ckey) != icfg.get(ckey) and cfg.get(ckey) is not None:
                lines.append(f"    {key}: [{', '.join(q(a) for a in cfg[ckey])}]")
        if cfg.get("User", "") != icfg.get("User", ""):
            lines.append(f"    user: {q(cfg['User'])}")
        image_env = set(icfg.get("Env") or [])
        env = [e for e in cfg.get("Env") or [] if e not in image_env]
        if env:
            lines.append("    environment:")
            for e in sorted(env):
                k, _, v = e.partition("=")
                lines.append(f"      {k}: {q(v)}")
        if host.get("Init"):
            lines.append("    init: true")
        if cfg.get("StopTimeout") is not None:
            lines.append(f"    stop_grace_period: {q(str(cfg['StopTimeout']) + 's')}")
        if host.get("NanoCpus"):
            lines.append(f"    cpus: {host['NanoCpus'] / 1e9}")
        if host.get("Memory"):
            lines.append(f"    mem_limit: {host['Memory']}")
        if host.get("CapAdd"):
            lines.append(f"    cap_add: [{', '.join(q(x) for x in host['CapAdd'])}]")
        hc = cfg.get("Healthcheck")
        if hc and hc.get("Test"):
            lines.append("    healthcheck:")
            lines.append(f"      test: [{', '.join(q(a) for a in hc['Test'])}]")
            for key, ckey in (("interval", "Interval"), ("timeout", "Timeout"), ("start_period", "StartPeriod")):
                if hc.get(ckey):
                    lines.append(f"      {key}: {q(duration(hc[ckey]))}")
            if hc.get("Retries"):
                lines.append(f"      retries: {hc['Retries']}")
        ports = []
        for cport, binds in sorted((host.get("PortBindings") or {}).items()):
            for b in binds or []:
                if b.get("HostIp") != "127.0.0.1":
                    sys.exit(f"error: {svc} publishes {cport} on {b.get('HostIp')!r}, not 127.0.0.1")
                # Loopback only, an ephemeral host port (the lab ran with --port 0).
                ports.append(f"127.0.0.1::{cport.split('/')[0]}")
        if ports:
            lines.append("    ports:")
            lines += [f"      - {q(p)}" for p in ports]
        mounts = []
        for m in c.get("Mounts") or []:
            if m["Type"] != "volume":
                sys.exit(f"error: {svc} has a {m['Type']} mount at {m['Destination']}; only volumes are known")
            vol = m["Name"][len(lab) + 1:] if m["Name"].startswith(lab + "-") else m["Name"]
            volumes.append(vol)
            mounts.append(f"{vol}:{m['Destination']}")
        if role == "lb":
            # The lab writes this file into the container before starting it.
            path = os.path.join(out, "balancer.toml")
            with open(path, "wb") as f:
                f.write(tar_member(docker("cp", f"{c['Name'].lstrip('/')}:{BALANCER_CONFIG}", "-", text=False)))
            os.chmod(path, 0o644)  # the balancer runs as nobody
            mounts.append(f"./balancer.toml:{BALANCER_CONFIG}:ro")
        if mounts:
            lines.append("    volumes:")
            lines += [f"      - {q(m)}" for m in mounts]
        aliases = []
        for net in (c["NetworkSettings"].get("Networks") or {}).values():
            for a in net.get("Aliases") or []:
                if a != svc and not c["Id"].startswith(a) and a not in aliases:
                    aliases.append(a)
        lines.append("    networks:")
        if aliases:
            lines.append(f"      {NETWORK}:")
            lines.append(f"        aliases: [{', '.join(q(a) for a in aliases)}]")
        else:
            lines.append(f"      - {NETWORK}")
        if depends:
            # The nearest earlier group that has members (group 1 has none
            # today: the servers come right after the databases and redis).
            mine = GROUP[role]
            groups = [GROUP[o["Config"]["Labels"][ROLE_LABEL]] for o in containers]
            prev = max((g for g in groups if g < mine), default=None)
            before = [service_of(o, lab) for o, g in zip(containers, groups) if g == prev]
            if before:
                lines.append(f"    depends_on: [{', '.join(q(b) for b in before)}]")
    lines += ["", "networks:", f"  {NETWORK}:", '    driver: "bridge"']
    if volumes:
        lines += ["", "volumes:"] + [f"  {q(v)}: {{}}" for v in volumes]
    with open(os.path.join(out, "docker-compose.yml"), "w") as f:
        f.write("# Generated by bench/up/compose_from_lab.py from lab %s.\n" % json.dumps(lab))
        f.write("\n".join(lines) + "\n")
    print(len(containers))


def tar_member(data):
    """The content of the single file in a tar stream (what `docker cp - ` gives)."""
    import io
    import tarfile
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        for m in t.getmembers():
            if m.isfile():
                return t.extractfile(m).read()
    sys.exit("error: docker cp gave no file")


if __name__ == "__main__":
    main()
