#!/usr/bin/env bash
# A one-node Slurm cluster on this machine (on 127.0.0.1, so the host name need not resolve), for the
# grid's Slurm test (tests/slurm.rs) and for trying
# `kdscope grid --slurm` by hand: munged, slurmctld and slurmd run as root from Debian's packages,
# without cgroups, with every file (config, state, spool, logs, pids, munge socket) under DIR.
#
#   scripts/slurm_cluster.sh install      # apt-get install slurmctld slurmd slurm-client munge (root or sudo)
#   scripts/slurm_cluster.sh start DIR    # starts the three daemons, waits for the node, prints the export line
#   export SLURM_CONF=DIR/slurm.conf      # then sbatch, squeue, scancel … talk to this cluster
#   scripts/slurm_cluster.sh stop DIR     # stops exactly the processes `start` started (pids in DIR/pids)
set -euo pipefail

die() { echo "slurm_cluster.sh: $*" >&2; exit 1; }
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

case "${1:-}" in
install)
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
    ;;
start)
    [ -n "${2:-}" ] || die "usage: start DIR"
    [ "$(id -u)" = 0 ] || die "the daemons run as root: run start as root"
    for b in munged slurmctld slurmd sinfo; do
        command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || die "$b not found: run '$0 install' first"
    done
    dir=$(realpath -m "$2")
    [ ! -s "$dir/pids" ] || die "$dir/pids exists: a cluster may still run there ('$0 stop $dir' first)"
    mkdir -p "$dir"/{state,spool,log,munge/key}
    host=$(hostname -s)
    # munge: its own key, socket and files under DIR, owned by the munge user.
    # (the key's folder private, the socket's folder open to every user, as munged requires)
    key="$dir/munge/key/munge.key"
    [ -f "$key" ] || dd if=/dev/urandom bs=1 count=1024 of="$key" status=none
    chown -R munge:munge "$dir/munge"
    chmod 755 "$dir/munge"
    chmod 700 "$dir/munge/key"
    chmod 400 "$key"
    socket="$dir/munge/munge.socket.2"
    setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground --key-file="$key" --socket="$socket" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/munged.seed" >"$dir/log/munged.out" 2>&1 &
    echo "$!" >>"$dir/pids"
    for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.1; done
    [ -S "$socket" ] || die "munged did not start (see $dir/munge/munged.log)"
    # Memory Slurm may hand out: 20,000 MB, less on a smaller machine.
    mem_mb=$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.8 }' /proc/meminfo)
    [ "$mem_mb" -lt 20000 ] || mem_mb=20000
    cpus=$(nproc)
    cat >"$dir/slurm.conf" <<EOF
# Written by scripts/slurm_cluster.sh: a one-node cluster, no cgroups, no accounting.
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=600
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$dir/slurm.conf"
    /usr/sbin/slurmctld -D -i -f "$SLURM_CONF" >"$dir/log/slurmctld.out" 2>&1 &
    echo "$!" >>"$dir/pids"
    /usr/sbin/slurmd -D -f "$SLURM_CONF" >"$dir/log/slurmd.out" 2>&1 &
    echo "$!" >>"$dir/pids"
    for _ in $(seq 300); do
        state=$(sinfo -h -o %T 2>/dev/null | head -1 || true)
        [ "$state" = "idle" ] && break
        sleep 0.2
    done
    [ "$state" = "idle" ] || die "the node is not idle after 60 s (state '${state:-none}'; logs in $dir/log)"
    echo "export SLURM_CONF=$SLURM_CONF"
    ;;
stop)
    [ -n "${2:-}" ] || die "usage: stop DIR"
    dir=$(realpath -m "$2")
    [ -f "$dir/pids" ] || exit 0
    # Reverse order: slurmd, slurmctld, munged.
    pids=$(tac "$dir/pids")
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    for _ in $(seq 100); do
        alive=0
        for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in $pids; do kill -9 "$pid" 2>/dev/null || true; done
    rm -f "$dir/pids"
    ;;
*)
    die "usage: $0 install | start DIR | stop DIR"
    ;;
esac
