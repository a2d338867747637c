#!/usr/bin/env bash
# Packs segmenter weights into the model.tar.gz a SageMaker endpoint loads
# (template.yaml, SegmenterModelDataUrl). SageMaker extracts the archive into /opt/ml/model, the
# container's MODEL_DIR, which the segmenter reads flat: each model is a file named as in the
# catalog (shared/src/models.rs, e.g. isnet.onnx) at the archive's root. A SHA256SUMS file
# beside them records what was packed (the segmenter loads catalog names only, so it is inert).
#
#   bash scripts/package-model.sh                          # every catalog model in .local/models
#   bash scripts/package-model.sh --models isnet,u2netp --src DIR --out out/model.tar.gz
#
# Files pinned in scripts/models.lock.json must match their sha256 there, or nothing is
# written; others (rembg release files) are packed with their sha256 recorded. The archive is
# reproducible (sorted names, owner 0, mtime 0, gzip without a timestamp), and its own sha256
# is written to OUT.sha256. Needs bash, python3, sha256sum, GNU tar and gzip.
set -euo pipefail
cd "$(dirname "$0")/.."

src=.local/models
out=out/model.tar.gz
models=""

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case $1 in
    --src) src=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --models) models=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "package-model: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

# The catalog's file names, read from the one place they are defined.
mapfile -t catalog < <(grep -o '"[A-Za-z0-9_.-]*\.onnx"' shared/src/models.rs | tr -d '"' | sort -u)
if [ ${#catalog[@]} -eq 0 ]; then
  echo "package-model: no model files found in shared/src/models.rs" >&2
  exit 1
fi
in_catalog() {
  local f
  for f in "${catalog[@]}"; do [ "$f" = "$1" ] && return 0; done
  return 1
}

files=()
if [ -n "$models" ]; then
  IFS=, read -r -a names <<<"$models"
  for name in "${names[@]}"; do
    file="${name%.onnx}.onnx"
    if ! in_catalog "$file"; then
      echo "package-model: $name is not a catalog model (known files: ${catalog[*]})" >&2
      exit 1
    fi
    if [ ! -f "$src/$file" ]; then
      echo "package-model: $src/$file is missing (bash scripts/setup.sh fetches isnet, isnet-int8, u2netp)" >&2
      exit 1
    fi
    files+=("$file")
  done
else
  for file in "${catalog[@]}"; do
    [ -f "$src/$file" ] && files+=("$file")
  done
fi
if [ ${#files[@]} -eq 0 ]; then
  echo "package-model: no catalog model in $src (run bash scripts/setup.sh, or pass --src)" >&2
  exit 1
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# Checks each file against the lock and writes SHA256SUMS (sha256sum's format).
python3 - "$src" "$stage/SHA256SUMS" scripts/models.lock.json "${files[@]}" <<'PY'
import hashlib, json, sys
src, sums, lock_path, *files = sys.argv[1:]
pinned = {m["file"]: m for m in json.load(open(lock_path))["models"]}
lines, bad = [], []
for name in files:
    h = hashlib.sha256()
    size = 0
    with open(f"{src}/{name}", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    digest = h.hexdigest()
    lock = pinned.get(name)
    if lock is None:
        print(f"  {name}: {size} bytes, sha256 {digest} (not pinned in models.lock.json)", file=sys.stderr)
    elif lock["sha256"] != digest or lock["bytes"] != size:
        bad.append(f"{name}: sha256 {digest} ({size} bytes), the lock says {lock['sha256']} ({lock['bytes']} bytes)")
    else:
        print(f"  {name}: {size} bytes, sha256 {digest} (matches models.lock.json)", file=sys.stderr)
    lines.append(f"{digest}  {name}\n")
if bad:
    sys.exit("package-model: checksum mismatch, nothing written:\n  " + "\n  ".join(bad))
open(sums, "w").write("".join(lines))
PY

for file in "${files[@]}"; do
  ln "$src/$file" "$stage/$file" 2>/dev/null || cp "$src/$file" "$stage/$file"
done

mkdir -p "$(dirname "$out")"
tmp="$out.partial"
(cd "$stage" && tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
  -cf - SHA256SUMS "${files[@]}") | gzip -n >"$tmp"
# What SageMaker will see in /opt/ml/model: the files at the root, checksums intact.
check=$(mktemp -d)
trap 'rm -rf "$stage" "$check"' EXIT
tar -xzf "$tmp" -C "$check"
(cd "$check" && sha256sum --quiet -c SHA256SUMS)
mv "$tmp" "$out"
(cd "$(dirname "$out")" && sha256sum "$(basename "$out")") >"$out.sha256"

echo "package-model: $out ($(du -h "$out" | cut -f1)): ${files[*]}" >&2
echo "package-model: sha256 $(cut -d' ' -f1 "$out.sha256") (also in $out.sha256)" >&2
cat >&2 <<EOF
next: aws s3 cp $out s3://YOUR-BUCKET/imagejobs/model-\$(date +%Y%m%d).tar.gz
      then deploy with SegmenterModelDataUrl=s3://YOUR-BUCKET/imagejobs/model-YYYYMMDD.tar.gz
      (containers/segmenter/README.md, Deploying on SageMaker)
EOF
