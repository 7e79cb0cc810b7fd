#!/usr/bin/env python3
"""Writes an OCI image layout with one uncompressed tar layer of N entries (default 1,000,000):
DIRS directories `dNNNN`, each holding files `fNNNN` of a few bytes, for scale benchmarks
(`bfcfs pull oci:DIR`).

    scripts/gen-synthetic-image.py OUT_DIR [ENTRIES] [shuffled]

`shuffled` writes the members (directories included) in a fixed random order instead of path
order, as a layer made without sorting may have them: files often come before their directory.
"""
import hashlib
import io
import json
import os
import random
import sys
import tarfile


def names(entries, per_dir):
    """(name, body) of each member in path order; body None for a directory."""
    n = 0
    d = 0
    while n < entries:
        dname = f"d{d:04}"
        yield dname, None
        n += 1
        f = 0
        while f < per_dir - 1 and n < entries:
            yield f"{dname}/f{f:04}", f"{d} {f}\n".encode()
            n += 1
            f += 1
        d += 1


def main():
    if len(sys.argv) not in (2, 3, 4) or sys.argv[3:] not in ([], ["shuffled"]):
        sys.exit(__doc__)
    out = sys.argv[1]
    entries = int(sys.argv[2]) if len(sys.argv) >= 3 else 1_000_000
    shuffled = sys.argv[3:] == ["shuffled"]
    per_dir = 1000
    blobs = os.path.join(out, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    layer_tmp = os.path.join(blobs, "layer.tmp")
    digest = hashlib.sha256()
    size = 0

    class Hashing(io.RawIOBase):
        def __init__(self, f):
            self.f = f

        def writable(self):
            return True

        def write(self, b):
            nonlocal size
            digest.update(b)
            size += len(b)
            return self.f.write(b)

    with open(layer_tmp, "wb") as raw:
        sink = io.BufferedWriter(Hashing(raw), 1 << 20)
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.GNU_FORMAT) as tar:
            members = names(entries, per_dir)
            if shuffled:
                members = list(members)
                random.Random(15).shuffle(members)
            for name, body in members:
                ti = tarfile.TarInfo(name)
                ti.mtime = 1_700_000_000
                if body is None:
                    ti.type = tarfile.DIRTYPE
                    ti.mode = 0o755
                    tar.addfile(ti)
                else:
                    ti.size = len(body)
                    ti.mode = 0o644
                    tar.addfile(ti, io.BytesIO(body))
        sink.flush()
    layer_hex = digest.hexdigest()
    os.replace(layer_tmp, os.path.join(blobs, layer_hex))

    def put(obj):
        data = json.dumps(obj, separators=(",", ":")).encode()
        h = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, h), "wb") as f:
            f.write(data)
        return h, len(data)

    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_hex}"]},
    }
    ch, cl = put(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": f"sha256:{ch}",
            "size": cl,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": f"sha256:{layer_hex}",
                "size": size,
            }
        ],
    }
    mh, ml = put(manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": f"sha256:{mh}",
                "size": ml,
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }
        ],
    }
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)


if __name__ == "__main__":
    main()
