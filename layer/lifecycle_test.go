package layer

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"strata/storage"
)

// TestStackedSnapshots64 takes 64 snapshots in a chain (snapshot, disk from
// it, write, repeat, alternating pooled and standard disks): the top disk
// and every snapshot read their exact contents, before and after sealing.
func TestStackedSnapshots64(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 16<<10)
	rng := rand.New(rand.NewPCG(64, 64))
	const size = 1 << 20
	img := make([]byte, size)
	fillRand(rng, img[:size/2])
	model := bytes.Clone(img)
	id := e.createDisk(e.importBytes(img), size, false)
	v := e.openDisk(id)
	type snap struct {
		id   LayerID
		data []byte
	}
	var snaps []snap
	for i := 0; i < 64; i++ {
		sid, err := e.m.Snapshot(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, snap{sid, bytes.Clone(model)})
		v.Close()
		id = e.createDisk(sid, size, i%2 == 0)
		v = e.openDisk(id)
		for j := 0; j < 3; j++ {
			off := rng.Int64N(size - 10000)
			p := make([]byte, 1+rng.IntN(10000))
			fillRand(rng, p)
			if err := v.WriteAt(ctx, p, off, false); err != nil {
				t.Fatal(err)
			}
			copy(model[off:], p)
		}
	}
	if got := readAll(t, v); !bytes.Equal(got, model) {
		t.Fatalf("top disk before seals: %s", firstDiff(got, model))
	}
	for _, s := range snaps {
		if err := e.m.WaitSealed(ctx, s.id, nil); err != nil {
			t.Fatal(err)
		}
	}
	if got := readAll(t, v); !bytes.Equal(got, model) {
		t.Fatalf("top disk after seals: %s", firstDiff(got, model))
	}
	for i, s := range snaps {
		lv, err := e.m.OpenLayer(s.id)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, lv); !bytes.Equal(got, s.data) {
			t.Fatalf("snapshot %d: %s", i, firstDiff(got, s.data))
		}
	}
	if err := e.m.drain(); err != nil {
		t.Fatal(err)
	}
	e.audit()
}

// TestDeleteEverythingFreesAllChunks builds images, disks and snapshots,
// deletes them all, and checks the audit is clean, no chunk and no layer
// record is left after GC, and the store's size on disk falls.
func TestDeleteEverythingFreesAllChunks(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 16<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	const size = 2 << 20
	img := make([]byte, size)
	fillRand(rng, img)
	imgID := e.importBytes(img)
	pooled := e.createDisk(imgID, size, true)
	standard := e.createDisk(imgID, size+1<<20, false)
	empty := e.createDisk(0, size, false)
	var snaps []LayerID
	for _, id := range []DiskID{pooled, standard, empty} {
		v := e.openDisk(id)
		for j := 0; j < 20; j++ {
			p := make([]byte, 5000+rng.IntN(30000))
			fillRand(rng, p)
			if err := v.WriteAt(ctx, p, rng.Int64N(size-40000), false); err != nil {
				t.Fatal(err)
			}
			if j%7 == 6 {
				sid, err := e.m.Snapshot(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				snaps = append(snaps, sid)
			}
		}
		if err := v.Trim(ctx, 0, 64<<10, false); err != nil {
			t.Fatal(err)
		}
		v.Close()
	}
	// A disk over a snapshot still sealing, and an aborted import.
	late := e.createDisk(snaps[len(snaps)-1], size+1<<20, false)
	p, err := e.m.Import(ctx, bytes.NewReader(img[:size/2]), size/2, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Abort()
	for _, s := range snaps {
		if err := e.m.WaitSealed(ctx, s, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.m.drain(); err != nil {
		t.Fatal(err)
	}
	e.audit()
	if _, err := e.store.GC(ctx); err != nil {
		t.Fatal(err)
	}
	full := e.store.Stats()
	if full.Chunks == 0 {
		t.Fatal("no chunks stored before the delete")
	}

	e.update(func(tx *storage.Txn) error {
		for _, id := range []DiskID{pooled, standard, empty, late} {
			if err := e.m.DeleteDisk(tx, id); err != nil {
				return err
			}
		}
		for _, s := range append(snaps, imgID) {
			if err := e.m.ReleaseLayer(tx, s); err != nil {
				return err
			}
		}
		return nil
	})
	if err := e.m.drain(); err != nil {
		t.Fatal(err)
	}
	e.audit()
	if _, err := e.store.GC(ctx); err != nil {
		t.Fatal(err)
	}
	st := e.store.Stats()
	if st.Chunks != 0 {
		t.Fatalf("%d chunks left after deleting everything", st.Chunks)
	}
	var left []string
	e.update(func(tx *storage.Txn) error {
		return tx.Iterate([]byte("layer/"), func(k, _ []byte) error {
			if !bytes.Equal(k, keyCounter) {
				left = append(left, string(k[:min(len(k), 10)]))
			}
			return nil
		})
	})
	if len(left) > 0 {
		t.Fatalf("%d layer records left, e.g. %q", len(left), left[0])
	}
	if _, err := e.m.LayerInfo(imgID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted image layer: %v", err)
	}
}

// TestPooledImageOutlivesItsRecord deletes a pooled image's holder while
// disks on it live: they read on, and the layer and its chunks go only
// with the last disk.
func TestPooledImageOutlivesItsRecord(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 16<<10)
	rng := rand.New(rand.NewPCG(3, 4))
	const size = 1 << 20
	img := make([]byte, size)
	fillRand(rng, img)
	imgID := e.importBytes(img)
	var disks []DiskID
	for i := 0; i < 3; i++ {
		disks = append(disks, e.createDisk(imgID, size, true))
	}
	e.update(func(tx *storage.Txn) error { return e.m.ReleaseLayer(tx, imgID) })
	if err := e.m.drain(); err != nil {
		t.Fatal(err)
	}
	lv, err := e.m.OpenLayer(imgID)
	if err != nil {
		t.Fatalf("layer with disks on it is gone: %v", err)
	}
	lv.Close()
	for _, id := range disks {
		v := e.openDisk(id)
		if got := readAll(t, v); !bytes.Equal(got, img) {
			t.Fatalf("disk %d: %s", id, firstDiff(got, img))
		}
		v.Close()
	}
	for i, id := range disks {
		e.update(func(tx *storage.Txn) error { return e.m.DeleteDisk(tx, id) })
		if err := e.m.drain(); err != nil {
			t.Fatal(err)
		}
		_, err := e.m.LayerInfo(imgID)
		if last := i == len(disks)-1; last != errors.Is(err, ErrNotFound) {
			t.Fatalf("after deleting %d of %d disks: layer info error %v", i+1, len(disks), err)
		}
	}
	e.audit()
	if _, err := e.store.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.store.Stats().Chunks; n != 0 {
		t.Fatalf("%d chunks left", n)
	}
}

// TestConcurrentReadersWriters hammers one disk from many goroutines: each
// writer owns a region and checks its own reads; several writers also
// write disjoint sub-block pieces of the same blocks (partial writes
// read-modify-write a block, which must not lose a neighbour's bytes); a
// snapshot is taken in the middle. Run under -race.
func TestConcurrentReadersWriters(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 16<<10)
	const size = 4 << 20
	img := make([]byte, size)
	fillRand(rand.New(rand.NewPCG(5, 6)), img)
	id := e.createDisk(e.importBytes(img), size, true)
	v := e.openDisk(id)
	defer v.Close()
	const workers = 6
	const region = size / 2 / workers
	var wg sync.WaitGroup
	errs := make(chan error, workers*2+1)
	for w := 0; w < workers; w++ {
		wg.Add(2)
		go func() { // region owner
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			model := bytes.Clone(img[w*region : (w+1)*region])
			for i := 0; i < 150; i++ {
				off := rng.Int64N(region - 9000)
				p := make([]byte, 1+rng.IntN(9000))
				if rng.IntN(3) == 0 {
					fillRand(rng, p)
					if err := v.WriteAt(ctx, p, int64(w*region)+off, false); err != nil {
						errs <- err
						return
					}
					copy(model[off:], p)
					continue
				}
				if err := v.ReadAt(ctx, p, int64(w*region)+off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(p, model[off:off+int64(len(p))]) {
					errs <- errors.New("region read mismatch: " + firstDiff(p, model[off:off+int64(len(p))]))
					return
				}
			}
		}()
		go func() { // shared blocks: writer w owns bytes [w*100, w*100+100) of each
			defer wg.Done()
			for i := 0; i < 60; i++ {
				b := int64(size/2 + (i%8)*blockSize)
				p := bytes.Repeat([]byte{byte(w + 1)}, 100)
				if err := v.WriteAt(ctx, p, b+int64(w*100), false); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := e.m.Snapshot(ctx, id); err != nil {
			errs <- err
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := 0; i < 8; i++ {
		b := int64(size/2 + i*blockSize)
		got := make([]byte, blockSize)
		if err := v.ReadAt(ctx, got, b); err != nil {
			t.Fatal(err)
		}
		for w := 0; w < workers; w++ {
			if !bytes.Equal(got[w*100:w*100+100], bytes.Repeat([]byte{byte(w + 1)}, 100)) {
				t.Fatalf("shared block %d lost writer %d's bytes", i, w)
			}
		}
		if !bytes.Equal(got[workers*100:], img[b+workers*100:b+blockSize]) {
			t.Fatalf("shared block %d lost the image's bytes", i)
		}
	}
}

// TestExportOutlivesImageRecord keeps a read-only export of an image open
// while its last holder is released: the export reads on, new opens fail,
// and the layer goes once the export closes.
func TestExportOutlivesImageRecord(t *testing.T) {
	e := newEnv(t, 16<<10)
	img := make([]byte, 256<<10)
	fillRand(rand.New(rand.NewPCG(8, 8)), img)
	id := e.importBytes(img)
	v, err := e.m.OpenLayer(id)
	if err != nil {
		t.Fatal(err)
	}
	e.update(func(tx *storage.Txn) error { return e.m.ReleaseLayer(tx, id) })
	if err := e.m.reap(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.OpenLayer(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("open of a released layer: %v", err)
	}
	if got := readAll(t, v); !bytes.Equal(got, img) {
		t.Fatalf("export after release: %s", firstDiff(got, img))
	}
	v.Close()
	if err := e.m.drain(); err != nil {
		t.Fatal(err)
	}
	e.audit()
	if _, err := e.store.GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := e.store.Stats().Chunks; n != 0 {
		t.Fatalf("%d chunks left after the export closed", n)
	}
}

// TestResizeThenSnapshot grows a disk past its base, writes past the old
// end, snapshots and seals: the new range reads zeros until written, and
// the snapshot holds the grown disk exactly. Shrinking is refused.
func TestResizeThenSnapshot(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 64<<10)
	img := make([]byte, 100000) // not chunk or block aligned
	fillRand(rand.New(rand.NewPCG(9, 9)), img)
	id := e.createDisk(e.importBytes(img), int64(len(img)), false)
	v := e.openDisk(id)
	defer v.Close()
	const grown = 300000
	e.update(func(tx *storage.Txn) error { return e.m.ResizeDisk(tx, id, grown) })
	if err := e.store.Update(func(tx *storage.Txn) error { return e.m.ResizeDisk(tx, id, 1000) }); !errors.Is(err, ErrInvalid) {
		t.Fatalf("shrink: %v", err)
	}
	if v.Size() != grown {
		t.Fatalf("size %d after resize", v.Size())
	}
	model := make([]byte, grown)
	copy(model, img)
	if got := readAll(t, v); !bytes.Equal(got, model) {
		t.Fatalf("grown disk: %s", firstDiff(got, model))
	}
	p := bytes.Repeat([]byte{0xAB}, 5000)
	for _, off := range []int64{99000, 200001, grown - 5000} {
		if err := v.WriteAt(ctx, p, off, false); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], p)
	}
	sid, err := e.m.Snapshot(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.WaitSealed(ctx, sid, nil); err != nil {
		t.Fatal(err)
	}
	sv, err := e.m.OpenLayer(sid)
	if err != nil {
		t.Fatal(err)
	}
	defer sv.Close()
	if got := readAll(t, sv); !bytes.Equal(got, model) {
		t.Fatalf("snapshot of grown disk: %s", firstDiff(got, model))
	}
	if err := e.m.drain(); err != nil {
		t.Fatal(err)
	}
	e.audit()
}

// TestUsageAccounting checks logical, unique and shared bytes: an imported
// layer owns its chunks; a standard disk's base shares the image's map;
// a disk's written blocks are its own.
func TestUsageAccounting(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 16<<10)
	img := make([]byte, 1<<20)
	fillRand(rand.New(rand.NewPCG(10, 10)), img[:512<<10]) // 32 data chunks, the rest zeros
	id := e.importBytes(img)
	info, err := e.m.LayerInfo(id)
	if err != nil {
		t.Fatal(err)
	}
	if info.Usage != (Usage{Logical: 1 << 20, Unique: 512 << 10}) || !info.Sealed {
		t.Fatalf("image: %+v", info)
	}
	d := e.createDisk(id, 2<<20, false)
	v := e.openDisk(d)
	defer v.Close()
	if err := v.WriteAt(ctx, make([]byte, 3*blockSize), 0, false); err != nil { // zeros: no data block
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, bytes.Repeat([]byte{1}, 2*blockSize), 8*blockSize, false); err != nil {
		t.Fatal(err)
	}
	u, err := e.m.DiskUsage(d)
	if err != nil {
		t.Fatal(err)
	}
	if u != (Usage{Logical: 2 << 20, Unique: 2 * blockSize, Shared: 512 << 10}) {
		t.Fatalf("standard disk: %+v", u)
	}
	if info, _ = e.m.LayerInfo(id); info.Usage.Shared != 512<<10 || info.Usage.Unique != 0 {
		t.Fatalf("image shared with a disk: %+v", info.Usage)
	}
}

// TestErrors checks the error each misuse returns.
func TestErrors(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 16<<10)
	img := e.importBytes(make([]byte, 64<<10))
	d := e.createDisk(img, 128<<10, true)
	v := e.openDisk(d)
	defer v.Close()
	lv, err := e.m.OpenLayer(img)
	if err != nil {
		t.Fatal(err)
	}
	defer lv.Close()
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"read past the end", v.ReadAt(ctx, make([]byte, 10), 128<<10-5), ErrOutOfRange},
		{"write past the end", v.WriteAt(ctx, make([]byte, 10), 128<<10, false), ErrOutOfRange},
		{"negative offset", v.Trim(ctx, -1, 10, false), ErrOutOfRange},
		{"fast zero, unaligned", v.WriteZeroes(ctx, 100, 8192, true, true, false), ErrNotFast},
		{"fast zero, aligned", v.WriteZeroes(ctx, 4096, 8192, false, true, false), nil},
		{"write to an image", lv.WriteAt(ctx, make([]byte, 10), 0, false), ErrReadOnly},
		{"trim an image", lv.Trim(ctx, 0, 10, false), ErrReadOnly},
		{"open a missing disk", second(e.m.OpenDisk(12345)), ErrNotFound},
		{"open a missing layer", second(e.m.OpenLayer(12345)), ErrNotFound},
		{"delete an open disk", e.store.Update(func(tx *storage.Txn) error { return e.m.DeleteDisk(tx, d) }), ErrBusy},
		{"disk smaller than its base", e.store.Update(func(tx *storage.Txn) error {
			_, err := e.m.CreateDisk(tx, img, 4096, false)
			return err
		}), ErrInvalid},
		{"release a layer twice", e.store.Update(func(tx *storage.Txn) error {
			if err := e.m.RetainLayer(tx, img); err != nil {
				return err
			}
			if err := e.m.ReleaseLayer(tx, img); err != nil {
				return err
			}
			if err := e.m.ReleaseLayer(tx, img); err != nil {
				return err
			}
			return e.m.ReleaseLayer(tx, img) // the disk on it keeps it, holderless
		}), ErrInvalid},
	} {
		if !errors.Is(c.err, c.want) || (c.want == nil && c.err != nil) {
			t.Errorf("%s: got %v, want %v", c.name, c.err, c.want)
		}
	}
}

func second[T any](_ T, err error) error { return err }

// TestExtentsMergeOverlayAndBase checks block status over an image with a
// zero range, a disk's data, written zeros and trims: data, zero and hole
// runs merge across the overlay and its base.
func TestExtentsMergeOverlayAndBase(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 16<<10)
	const K = 1 << 10
	img := make([]byte, 256*K)
	fillRand(rand.New(rand.NewPCG(11, 11)), img[:64*K]) // data [0,64K), zero chunks after
	d := e.createDisk(e.importBytes(img), 256*K, true)
	v := e.openDisk(d)
	defer v.Close()
	steps := []error{
		v.WriteAt(ctx, bytes.Repeat([]byte{7}, 8*K), 128*K, false), // data in a base hole
		v.WriteZeroes(ctx, 16*K, 8*K, false, false, false),         // written zeros over data
		v.Trim(ctx, 32*K, 8*K, false),                              // trimmed: a hole
		v.WriteZeroes(ctx, 48*K, 4*K, true, false, false),          // zeroed with mayTrim: a hole
		v.WriteAt(ctx, make([]byte, 4*K), 200*K, false),            // zero data: zero, allocated
	}
	for _, err := range steps {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := v.Extents(ctx, 0, 256*K)
	if err != nil {
		t.Fatal(err)
	}
	want := []Extent{
		{16 * K, false, false},
		{8 * K, false, true},
		{8 * K, false, false},
		{8 * K, true, true},
		{8 * K, false, false},
		{4 * K, true, true},
		{12 * K, false, false},
		{64 * K, true, true},
		{8 * K, false, false},
		{64 * K, true, true},
		{4 * K, false, true},
		{52 * K, true, true},
	}
	if len(got) != len(want) {
		t.Fatalf("extents\n got %v\nwant %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("extent %d: got %+v want %+v (all: %v)", i, got[i], want[i], got)
		}
	}
	// An unaligned query clips the first and last runs.
	part, err := v.Extents(ctx, 20*K+5, 10*K)
	if err != nil {
		t.Fatal(err)
	}
	if len(part) != 2 || part[0] != (Extent{4*K - 5, false, true}) || part[1] != (Extent{6*K + 5, false, false}) {
		t.Fatalf("unaligned extents: %v", part)
	}
}

// TestUncommittedImportAndSealResume closes the manager with an import
// never committed and a seal just started: reopening drops the import
// (nothing left after GC) and finishes the seal, which reads exactly.
func TestUncommittedImportAndSealResume(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 4<<10)
	rng := rand.New(rand.NewPCG(12, 12))
	data := make([]byte, 512<<10)
	fillRand(rng, data)
	if _, err := e.m.Import(ctx, bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatal(err)
	}
	d := e.createDisk(0, 1<<20, false)
	v := e.openDisk(d)
	model := make([]byte, 1<<20)
	for i := 0; i < 200; i++ {
		p := make([]byte, 1+rng.IntN(6000))
		fillRand(rng, p)
		off := rng.Int64N(int64(len(model) - len(p)))
		if err := v.WriteAt(ctx, p, off, false); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], p)
	}
	sid, err := e.m.Snapshot(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	v.Close()
	e.reopen()
	if err := e.m.WaitSealed(ctx, sid, nil); err != nil {
		t.Fatal(err)
	}
	sv, err := e.m.OpenLayer(sid)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, sv); !bytes.Equal(got, model) {
		t.Fatalf("resumed seal: %s", firstDiff(got, model))
	}
	sv.Close()
	e.update(func(tx *storage.Txn) error {
		if err := e.m.DeleteDisk(tx, d); err != nil {
			return err
		}
		return e.m.ReleaseLayer(tx, sid)
	})
	if err := e.m.drain(); err != nil {
		t.Fatal(err)
	}
	e.audit()
	if _, err := e.store.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.store.Stats().Chunks; n != 0 {
		t.Fatalf("%d chunks left: the uncommitted import was not dropped", n)
	}
}

// TestPooledDisksShareTheCache reads a pooled image through several disks
// at once: each chunk is read from the store once, whatever the number of
// disks.
func TestPooledDisksShareTheCache(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 16<<10)
	const size = 1 << 20
	img := make([]byte, size)
	fillRand(rand.New(rand.NewPCG(13, 13)), img)
	id := e.importBytes(img)
	m0 := e.m.cache.misses.Load()
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		v := e.openDisk(e.createDisk(id, size, true))
		defer v.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 4096)
			for off := int64(0); off < size; off += int64(len(p)) {
				if err := v.ReadAt(ctx, p, off); err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(p, img[off:off+int64(len(p))]) {
					t.Errorf("read at %d differs", off)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := e.m.cache.misses.Load() - m0; n != size/(16<<10) {
		t.Fatalf("%d chunk reads from the store for %d chunks read by 4 disks", n, size/(16<<10))
	}
}

// TestSparseSealOverFullMap seals a few scattered writes over a fully
// allocated 1 GiB map of distinct chunks (4 KiB chunks): every rewritten
// leaf recounts 1024 chunks, so the seal must split its transactions by
// leaves, not only by chunks merged. Reads and the audit stay exact.
func TestSparseSealOverFullMap(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 4<<10)
	const size = 1 << 30
	img := buildSyntheticLayer(t, e.m, size, fanout)
	d := e.createDisk(img, size, true)
	v := e.openDisk(d)
	defer v.Close()
	p := bytes.Repeat([]byte{0x5A}, blockSize)
	const stride = 4 << 20 // one block in every leaf
	for off := int64(0); off < size; off += stride {
		if err := v.WriteAt(ctx, p, off+blockSize, false); err != nil {
			t.Fatal(err)
		}
	}
	sid, err := e.m.Snapshot(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.WaitSealed(ctx, sid, nil); err != nil {
		t.Fatal(err)
	}
	sv, err := e.m.OpenLayer(sid)
	if err != nil {
		t.Fatal(err)
	}
	defer sv.Close()
	iv, err := e.m.OpenLayer(img)
	if err != nil {
		t.Fatal(err)
	}
	defer iv.Close()
	got, want := make([]byte, 2*blockSize), make([]byte, 2*blockSize)
	for off := int64(0); off < size; off += 37 * stride / 8 {
		base := off &^ (stride - 1)
		if err := sv.ReadAt(ctx, got, base); err != nil {
			t.Fatal(err)
		}
		if err := iv.ReadAt(ctx, want, base); err != nil {
			t.Fatal(err)
		}
		copy(want[blockSize:], p)
		if !bytes.Equal(got, want) {
			t.Fatalf("snapshot at %d: %s", base, firstDiff(got, want))
		}
	}
	if err := e.m.drain(); err != nil {
		t.Fatal(err)
	}
	e.audit()
}
