# Checks run by nbd's TestNbdshStructuredRepliesBlockStatusFastZeroAndErrnos
# with libnbd's Python module (Debian's python3). argv[1] is the server's
# Unix socket; export "rw" holds 128 KiB of 0x5a then holes (4 MiB), export
# "ro" is read-only and starts with 4 KiB of 0x5a.
import nbd, errno, sys
sock = sys.argv[1]

h = nbd.NBD()
h.add_meta_context("base:allocation")
h.connect_uri("nbd+unix:///rw?socket=" + sock)
assert h.get_structured_replies_negotiated()
assert h.can_meta_context("base:allocation")
assert h.can_fast_zero() and h.can_df() and h.can_multi_conn()
size = h.get_size()

# Structured read over data and hole: the chunk callback sees both kinds.
kinds = []
def chunk(buf, offset, status, err):
    kinds.append((status, offset, len(buf)))
    return 0
buf = h.pread_structured(256 * 1024, 0, chunk)
assert buf[:4096] == bytes([0x5a]) * 4096, "data"
assert buf[128*1024:] == bytes(128*1024), "hole"
assert (nbd.READ_HOLE, 128*1024, 128*1024) in kinds, kinds
assert any(k[0] == nbd.READ_DATA for k in kinds), kinds

# DF: a single data chunk even over a hole.
kinds.clear()
h.pread_structured(256 * 1024, 0, chunk, flags=nbd.CMD_FLAG_DF)
assert len(kinds) == 1 and kinds[0][0] == nbd.READ_DATA, kinds

# Block status: data then hole, and REQ_ONE gives one extent.
ents = []
def ext(meta, offset, entries, err):
    ents.extend(entries)
    return 0
h.block_status(1024 * 1024, 0, ext)
assert ents[0:4] == [128*1024, 0, 1024*1024 - 128*1024, 3], ents
ents.clear()
h.block_status(1024 * 1024, 0, ext, flags=nbd.CMD_FLAG_REQ_ONE)
assert len(ents) == 2, ents

# Fast zero: allowed to punch -> success; with NO_HOLE the backend is slow
# -> ENOTSUP, and the data is untouched.
h.zero(4096, 0, flags=nbd.CMD_FLAG_FAST_ZERO)
assert h.pread(4096, 0) == bytes(4096)
h.pwrite(bytes([7]) * 4096, 8192)
try:
    h.zero(4096, 8192, flags=nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)
    raise SystemExit("fast zero with NO_HOLE should fail")
except nbd.Error as e:
    assert e.errnum == errno.ENOTSUP, e
assert h.pread(4096, 8192) == bytes([7]) * 4096

# Out of range: libnbd would refuse client-side; strict mode off sends it.
h.set_strict_mode(0)
for what, fn, want in [
    ("read past end", lambda: h.pread(4096, size), errno.EINVAL),
    ("read straddling end", lambda: h.pread(8192, size - 4096), errno.EINVAL),
    ("write past end", lambda: h.pwrite(bytes(4096), size), errno.ENOSPC),
    ("trim past end", lambda: h.trim(4096, size), errno.ENOSPC),
    ("block status past end", lambda: h.block_status(4096, size, ext), errno.EINVAL),
]:
    try:
        fn()
        raise SystemExit(what + ": no error")
    except nbd.Error as e:
        assert e.errnum == want, (what, e)
h.flush()
h.shutdown()

ro = nbd.NBD()
ro.connect_uri("nbd+unix:///ro?socket=" + sock)
assert ro.is_read_only()
assert not ro.can_trim() and not ro.can_zero()
ro.set_strict_mode(0)
for what, fn in [
    ("write", lambda: ro.pwrite(bytes(512), 0)),
    ("trim", lambda: ro.trim(4096, 0)),
    ("zero", lambda: ro.zero(4096, 0)),
]:
    try:
        fn()
        raise SystemExit("read-only " + what + ": no error")
    except nbd.Error as e:
        assert e.errnum == errno.EPERM, (what, e)
assert ro.pread(4096, 0) == bytes([0x5a]) * 4096
ro.shutdown()
print("nbdsh-ok")
