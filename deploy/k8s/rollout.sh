#!/usr/bin/env bash
# Roll a release to the current kubectl context, in order:
#   1. the migration Job of this release (migrate-job.yaml), waited for: stop if it fails;
#   2. the CPU Deployment and its Service, PDB, HPA and Ingress (tollgate.yaml);
#   3. with --gpu, the GPU Deployment (tollgate-gpu.yaml).
# The Secret (secret.example.yaml, filled in) must exist already.
# usage: REGISTRY=registry.example.com/acme deploy/k8s/rollout.sh [--gpu]
# REGISTRY replaces the placeholder registry.example.com/tollgate in the image references.
set -euo pipefail
cd "$(dirname "$0")"
registry="${REGISTRY:-registry.example.com/tollgate}"
render() { sed "s#registry.example.com/tollgate/#${registry%/}/#g" "$1"; }

job=$(sed -n 's/^  name: \(tollgate-migrate-.*\)$/\1/p' migrate-job.yaml | head -n1)
echo "migrating: job/$job"
render migrate-job.yaml | kubectl apply -f -
for _ in $(seq 180); do  # 15 minutes at most (the Job's own deadline)
  state=$(kubectl get "job/$job" -o jsonpath='{.status.conditions[?(@.status=="True")].type}')
  case " $state " in
    *" Complete "*) echo "migrated"; break ;;
    *" Failed "*) echo "migration failed: kubectl logs job/$job" >&2; exit 1 ;;
  esac
  sleep 5
done
case " $state " in *" Complete "*) ;; *) echo "migration did not finish" >&2; exit 1 ;; esac

render tollgate.yaml | kubectl apply -f -
kubectl rollout status deployment/tollgate --timeout=15m
if [[ "${1:-}" == "--gpu" ]]; then
  render tollgate-gpu.yaml | kubectl apply -f -
  kubectl rollout status deployment/tollgate-gpu --timeout=15m
fi
