#!/usr/bin/env python3
"""Keeps a target's corpus small after a run: the committed files (seeds, crash-*) plus, chosen
greedily, the new inputs that cover the most edges not yet covered, up to 200 files / 2 MB.
(`cargo fuzz cmin` keeps every input with a new counter value: hundreds of files here.)

    cargo +nightly fuzz run T -- -max_total_time=600 -jobs=1 -workers=1 -rss_limit_mb=2048
    python3 fuzz/keep.py T          # then review and commit fuzz/corpus/T
"""
import hashlib, os, shutil, subprocess, sys, tempfile

t = sys.argv[1]
max_files = int(sys.argv[2]) if len(sys.argv) > 2 else 200
max_bytes = int(sys.argv[3]) if len(sys.argv) > 3 else 2_000_000
fuzz = os.path.dirname(os.path.abspath(__file__))
corpus = os.path.join(fuzz, 'corpus', t)
binary = os.path.join(fuzz, 'target', 'x86_64-unknown-linux-gnu', 'release', t)
work = tempfile.mkdtemp(prefix=f'keep-{t}-')
found = os.path.join(work, 'found')
shutil.move(corpus, found)
os.makedirs(corpus)
subprocess.run(['git', 'checkout', 'HEAD', '--', corpus], cwd=fuzz, check=False)
ctl, empty = os.path.join(work, 'ctl'), os.path.join(work, 'empty')
os.makedirs(empty)
subprocess.run([binary, '-merge=1', '-use_counters=0', '-rss_limit_mb=2048',
                f'-merge_control_file={ctl}', empty, corpus, found],
               cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
lines = open(ctl).read().split('\n')
n = int(lines[0])
files = lines[2:2 + n]
cov = {}
for line in lines[2 + n:]:
    p = line.split()
    if p and p[0] == 'COV':
        cov[int(p[1])] = set(p[2:])
keep = [i for i, f in enumerate(files) if f.startswith(corpus + '/')]
covered = set().union(*(cov.get(i, set()) for i in keep))
size = sum(os.path.getsize(files[i]) for i in keep)
candidates = [i for i, f in enumerate(files) if f.startswith(found + '/')]
chosen = []
while len(keep) + len(chosen) < max_files:
    best, gain = None, 0
    for i in candidates:
        g = len(cov.get(i, set()) - covered)
        if g > gain or (g == gain and g > 0 and os.path.getsize(files[i]) < os.path.getsize(files[best])):
            best, gain = i, g
    if best is None:
        break
    candidates.remove(best)
    s = os.path.getsize(files[best])
    if size + s > max_bytes:
        continue
    chosen.append(best)
    covered |= cov[best]
    size += s
for i in chosen:
    data = open(files[i], 'rb').read()
    open(os.path.join(corpus, hashlib.sha1(data).hexdigest()), 'wb').write(data)
total = set().union(*cov.values())
print(f'{t}: kept {len(keep)}, added {len(chosen)}, {size} bytes; edges {len(covered)} of {len(total)}')
print(f'everything the run found is still in {found}')
