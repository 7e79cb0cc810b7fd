#!/usr/bin/env python3
"""Writes a synthetic OCI image layout for lookup benchmarks.

Usage: synth-image.py DIR LAYERS FILES
Every layer has the directory d/; FILES files d/fNNNNN are spread round-robin over the layers
(file j in layer j % LAYERS, counting from the base), so a lookup of a name usually has to pass
many layers before it finds the one holding it. Each layer also has its own dir l<i>/.
"""
import hashlib, io, json, os, sys, tarfile

out, nlayers, nfiles = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(f"{out}/blobs/sha256", exist_ok=True)

def put(data):
    h = hashlib.sha256(data).hexdigest()
    with open(f"{out}/blobs/sha256/{h}", "wb") as f:
        f.write(data)
    return "sha256:" + h, len(data)

def layer(i):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name in ("d", f"l{i}"):
            ti = tarfile.TarInfo(name); ti.type = tarfile.DIRTYPE; ti.mode = 0o755; ti.mtime = 1700000000
            t.addfile(ti)
        for j in range(i, nfiles, nlayers):
            data = f"file {j}\n".encode()
            ti = tarfile.TarInfo(f"d/f{j:05d}"); ti.size = len(data); ti.mode = 0o644; ti.mtime = 1700000000
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()

layers = [layer(i) for i in range(nlayers)]
descs = []
for l in layers:
    d, n = put(l)
    descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n})
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                     "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descs]}}).encode()
cd, cn = put(config)
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
                       "layers": descs}).encode()
md, mn = put(manifest)
with open(f"{out}/oci-layout", "w") as f:
    f.write('{"imageLayoutVersion":"1.0.0"}')
with open(f"{out}/index.json", "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
               "digest": md, "size": mn, "annotations": {"org.opencontainers.image.ref.name": "synth"}}]}, f)
