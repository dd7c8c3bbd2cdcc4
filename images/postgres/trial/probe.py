#!/usr/bin/python3
"""What `lab status` needs to know about the database nodes, asked the way
the CLI will ask: Patroni's REST API (port 8008) and etcd's /health (2379),
plus one query on the primary for the replay lag in time.

Run inside any database node (it reaches the others by name on the lab's
network):  python3 - status < probe.py   |   python3 - leader < probe.py

`status` prints one JSON document: each node's role, state, timeline, lag in
bytes and in milliseconds, its replay delay, and whether automatic failover
is possible now, and if not, why.
"""

import json
import os
import sys
import urllib.request

NODES = os.environ["DB_NODES"].split(",")
ETCD = os.environ.get("DB_ETCD_NODES", os.environ["DB_NODES"]).split(",")


def get(url, timeout=1.5):
    """(status code, parsed JSON or None); 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, None
    except Exception:
        return 0, None


def cluster():
    for n in NODES:
        code, body = get(f"http://{n}:8008/cluster")
        if code == 200 and body:
            return n, body
    return None, None


def etcd_health():
    healthy = []
    for n in ETCD:
        code, body = get(f"http://{n}:2379/health")
        if code == 200 and body and body.get("health") == "true":
            healthy.append(n)
    need = len(ETCD) // 2 + 1
    return {"members": ETCD, "healthy": healthy, "majority_needs": need,
            "quorum": len(healthy) >= need,
            "survives_losses": len(ETCD) - need}


def replay_lag_ms(leader):
    """pg_stat_replication on the primary: how far behind in time each replica
    applies (Patroni's own lag is in bytes)."""
    try:
        import psycopg2
        conn = psycopg2.connect(host=leader, user="postgres", dbname="postgres",
                                password=os.environ["POSTGRES_PASSWORD"], connect_timeout=2)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT application_name, state, sync_state,"
                        " (extract(epoch FROM replay_lag) * 1000)::int FROM pg_stat_replication")
            rows = cur.fetchall()
        conn.close()
        return {r[0]: {"walsender": r[1], "sync_state": r[2], "replay_lag_ms": r[3] or 0} for r in rows}
    except Exception as e:
        return {"error": str(e).strip()}


def show(host, setting):
    try:
        import psycopg2
        conn = psycopg2.connect(host=host, user="postgres", dbname="postgres",
                                password=os.environ["POSTGRES_PASSWORD"], connect_timeout=2)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT current_setting(%s)", (setting,))
            value = cur.fetchone()[0]
        conn.close()
        return value
    except Exception:
        return None


def status():
    asked, c = cluster()
    etcd = etcd_health()
    out = {"asked": asked, "etcd": etcd, "nodes": []}
    per_node = {}
    leader = None
    if c:
        for m in c["members"]:
            if m["role"] == "leader":
                leader = m["name"]
        per_node = replay_lag_ms(leader) if leader else {}
        out["paused"] = bool(c.get("pause"))
    for n in NODES:
        code, p = get(f"http://{n}:8008/patroni")
        node = {"name": n, "reachable": code != 0}
        if p:
            node.update({"patroni_role": p.get("role"), "state": p.get("state"),
                         "timeline": p.get("timeline"), "dcs_last_seen": p.get("dcs_last_seen")})
        if c:
            m = next((m for m in c["members"] if m["name"] == n), None)
            if m:
                node["db_role"] = "primary" if m["role"] == "leader" else "replica"
                node["sync"] = m["role"] == "sync_standby"
                node["lag_bytes"] = m.get("lag", 0) if m["role"] != "leader" else 0
                node["member_state"] = m.get("state")
        if n in per_node:
            node.update(per_node[n])
        if node["reachable"]:
            node["recovery_min_apply_delay"] = show(n, "recovery_min_apply_delay")
        out["nodes"].append(node)
    # Why automatic failover is (not) possible right now.
    why = []
    if not etcd["quorum"]:
        why.append(f"etcd has {len(etcd['healthy'])} of {len(ETCD)} members up; a majority needs "
                   f"{etcd['majority_needs']}: no node can take the leader key")
    elif etcd["survives_losses"] == 0:
        why.append(f"etcd runs on {len(ETCD)} node(s); losing any one loses the majority "
                   f"({etcd['majority_needs']} of {len(ETCD)}): failover needs 3 database nodes (--replicas 2)")
    if c and c.get("pause"):
        why.append("failover is off (Patroni paused)")
    if c is None:
        why.append("no Patroni answers /cluster (it reads the cluster from etcd)")
    out["failover"] = {"possible": not why, "why": why}
    out["primary"] = leader
    print(json.dumps(out, indent=1))


def leader():
    _, c = cluster()
    for m in (c or {}).get("members", []):
        if m["role"] == "leader" and m.get("state") == "running":
            print(m["name"])
            return 0
    return 1


if __name__ == "__main__":
    sys.exit({"status": status, "leader": leader}[sys.argv[1]]() or 0)
