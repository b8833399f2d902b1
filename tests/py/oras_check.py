"""oras-py (PyPI `oras`) against the registry at $REGISTRY (host:port, plain HTTP):
push a files artifact, pull it back byte for byte, attach an artifact whose
`subject` is the first one (what `oras attach` does), and list the subject's
referrers through the client. Prints PASS/FAIL lines; exits 1 on any failure."""
import hashlib
import json
import os
import shutil
import sys
import tempfile

import oras.client
import oras.oci

REGISTRY = os.environ["REGISTRY"]
failures = []


def check(name, ok):
    print(("PASS " if ok else "FAIL ") + name, flush=True)
    if not ok:
        failures.append(name)


client = oras.client.OrasClient(hostname=REGISTRY, insecure=True, tls_verify=False)
work = tempfile.mkdtemp(prefix="berth-oras.")
files = os.path.join(work, "files")
os.makedirs(files)
data = hashlib.sha256(b"berth").digest() * 40000  # 1.25 MiB
with open(os.path.join(files, "data.bin"), "wb") as f:
    f.write(data)
cwd = os.getcwd()
os.chdir(files)
target = "%s/oras/app:v1" % REGISTRY
response = client.push(target=target, files=["data.bin:application/vnd.example.data"], quiet=True)
check("oras push files artifact -> 201", response.status_code == 201)
subject_digest = response.headers.get("Docker-Content-Digest")
check("push answered Docker-Content-Digest", bool(subject_digest))
os.chdir(cwd)

pulled = os.path.join(work, "pulled")
client.pull(target=target, outdir=pulled)
with open(os.path.join(pulled, "data.bin"), "rb") as f:
    check("pulled data.bin is byte-identical", f.read() == data)
check("get_tags == ['v1']", client.get_tags("%s/oras/app" % REGISTRY) == ["v1"])

raw = client.do_request("http://%s/v2/oras/app/manifests/v1" % REGISTRY, "GET",
                        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
subject = oras.oci.Subject(mediaType="application/vnd.oci.image.manifest.v1+json",
                           digest=subject_digest, size=len(raw.content))
os.chdir(files)
with open("signature.json", "w") as f:
    f.write('{"signed": "oras/app:v1"}')
attached = client.push(target="%s/oras/app:sig" % REGISTRY,
                       files=["signature.json:application/vnd.example.signature+json"],
                       subject=subject, quiet=True)
os.chdir(cwd)
check("push artifact with subject -> 201", attached.status_code == 201)
check("OCI-Subject header names the subject", attached.headers.get("OCI-Subject") == subject_digest)
signature_digest = attached.headers.get("Docker-Content-Digest")

listing = client.do_request("http://%s/v2/oras/app/referrers/%s" % (REGISTRY, subject_digest), "GET")
check("referrers -> 200", listing.status_code == 200)
index = listing.json()
digests = [m["digest"] for m in index.get("manifests", [])]
check("referrers list the attached artifact", signature_digest in digests)
check("referrers is an OCI index", index.get("mediaType") == "application/vnd.oci.image.index.v1+json")

shutil.rmtree(work, ignore_errors=True)
print("%d failed" % len(failures))
sys.exit(1 if failures else 0)
