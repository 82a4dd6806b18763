package layer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The crash test re-executes the test binary as a writer child (see
// TestMain) and kills it with SIGKILL at random points.
const crashEnv = "STRATA_LAYER_CRASH_CHILD"

const (
	crashDiskSize    = 2 << 20
	crashBatchBlocks = 12
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashEnv); dir != "" {
		if err := crashChild(dir); err != nil {
			fmt.Fprintln(os.Stderr, "crash child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashBatch is the deterministic content of batch n: which blocks it
// writes and with what (nil: the block is trimmed). Written blocks start
// with the batch number, so a block read back names the batch it is from.
func crashBatch(n int) (blocks []int64, data [][]byte) {
	rng := rand.New(rand.NewPCG(uint64(n), 99))
	for i := 0; i < crashBatchBlocks; i++ {
		b := rng.Int64N(crashDiskSize / blockSize)
		var p []byte
		if rng.IntN(4) != 0 {
			p = make([]byte, blockSize)
			fillRand(rng, p)
			binary.LittleEndian.PutUint64(p, uint64(n)+1)
		}
		blocks = append(blocks, b)
		data = append(data, p)
	}
	return blocks, data
}

// crashModel is the disk after batches [0, n).
func crashModel(n int) []byte {
	img := make([]byte, crashDiskSize)
	for i := 0; i < n; i++ {
		blocks, data := crashBatch(i)
		for j, b := range blocks {
			if data[j] == nil {
				clear(img[b*blockSize : (b+1)*blockSize])
			} else {
				copy(img[b*blockSize:], data[j])
			}
		}
	}
	return img
}

// crashChild writes batches forever, flushing after each and recording the
// flushed batch count (and snapshots) in dir/progress after the flush.
func crashChild(dir string) error {
	e := &env{t: &testing.T{}, dir: filepath.Join(dir, "store"), chunk: 16 << 10}
	if err := e.tryOpen(); err != nil {
		return err
	}
	prog, err := readProgress(dir)
	if err != nil {
		return err
	}
	ctx := context.Background()
	id := prog.disk
	if id == 0 {
		if err := e.store.Update(func(tx *storageTxn) (err error) {
			id, err = e.m.CreateDisk(tx, 0, crashDiskSize, false)
			return err
		}); err != nil {
			return err
		}
		if err := e.store.Sync(); err != nil {
			return err
		}
		if err := appendProgress(dir, fmt.Sprintf("disk %d", id)); err != nil {
			return err
		}
	}
	v, err := e.m.OpenDisk(id)
	if err != nil {
		return err
	}
	for n := prog.batches; ; n++ {
		blocks, data := crashBatch(n)
		for j, b := range blocks {
			var err error
			if data[j] == nil {
				err = v.Trim(ctx, b*blockSize, blockSize, false)
			} else {
				err = v.WriteAt(ctx, data[j], b*blockSize, false)
			}
			if err != nil {
				return err
			}
		}
		if err := v.Flush(ctx); err != nil {
			return err
		}
		if err := appendProgress(dir, fmt.Sprintf("batch %d", n+1)); err != nil {
			return err
		}
		if n%4 == 3 {
			sid, err := e.m.Snapshot(ctx, id)
			if err != nil {
				return err
			}
			if err := appendProgress(dir, fmt.Sprintf("snap %d %d", sid, n+1)); err != nil {
				return err
			}
		}
	}
}

type progress struct {
	disk    DiskID
	batches int
	snaps   map[LayerID]int
}

func readProgress(dir string) (progress, error) {
	p := progress{snaps: map[LayerID]int{}}
	f, err := os.Open(filepath.Join(dir, "progress"))
	if os.IsNotExist(err) {
		return p, nil
	}
	if err != nil {
		return p, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		nums := make([]int, len(fs))
		for i := 1; i < len(fs); i++ {
			nums[i], _ = strconv.Atoi(fs[i])
		}
		switch {
		case len(fs) == 2 && fs[0] == "disk":
			p.disk = DiskID(nums[1])
		case len(fs) == 2 && fs[0] == "batch":
			p.batches = nums[1]
		case len(fs) == 3 && fs[0] == "snap":
			p.snaps[LayerID(nums[1])] = nums[2]
		}
	}
	return p, sc.Err()
}

func appendProgress(dir, line string) error {
	f, err := os.OpenFile(filepath.Join(dir, "progress"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// TestCrashKillNineKeepsFlushedWrites kills a writer child with SIGKILL at
// random points 20 times; after each, every write acknowledged by a Flush
// reads back, every recorded snapshot holds exactly its batches (also once
// its interrupted seal has resumed), and the audit is clean.
func TestCrashKillNineKeepsFlushedWrites(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(42, 42))
	ctx := context.Background()
	kills := 20
	for round := 0; round < kills; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill once the child has made progress, at a random point after.
		before, _ := readProgress(dir)
		deadline := time.Now().Add(60 * time.Second)
		for {
			p, err := readProgress(dir)
			if err != nil {
				t.Fatal(err)
			}
			if p.disk != 0 && p.batches > before.batches {
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("child made no progress: %s", stderr.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("child ended by itself (%v): %s", err, stderr.String())
		}

		p, err := readProgress(dir)
		if err != nil {
			t.Fatal(err)
		}
		e := &env{t: t, dir: filepath.Join(dir, "store"), chunk: 16 << 10}
		e.open()
		v := e.openDisk(p.disk)
		got := readAll(t, v)
		// Batches p.batches and p.batches+1 may have landed in part (the
		// kill fell between their writes and the progress record); every
		// other block must hold exactly the flushed state.
		want := crashModel(p.batches)
		uncertain := map[int64]bool{} // written by an unflushed batch
		trimmed := map[int64]bool{}   // trimmed by an unflushed batch
		for n := p.batches; n < p.batches+2; n++ {
			blocks, data := crashBatch(n)
			for j, b := range blocks {
				uncertain[b] = true
				trimmed[b] = trimmed[b] || data[j] == nil
			}
		}
		for b := int64(0); b < crashDiskSize/blockSize; b++ {
			g := got[b*blockSize : (b+1)*blockSize]
			w := want[b*blockSize : (b+1)*blockSize]
			if uncertain[b] {
				n := binary.LittleEndian.Uint64(g) // batch+1, 0 for zeros
				fromUnflushed := n > uint64(p.batches) && n <= uint64(p.batches+2)
				if !bytes.Equal(g, w) && !fromUnflushed && !(trimmed[b] && isZero(g)) {
					t.Fatalf("round %d: block %d holds batch %d, flushed up to %d", round, b, int64(n)-1, p.batches)
				}
				continue
			}
			if !bytes.Equal(g, w) {
				t.Fatalf("round %d: block %d lost flushed data after %d batches: %s", round, b, p.batches, firstDiff(g, w))
			}
		}
		for sid, n := range p.snaps {
			if err := e.m.WaitSealed(ctx, sid, nil); err != nil {
				t.Fatal(err)
			}
			sv, err := e.m.OpenLayer(sid)
			if err != nil {
				t.Fatalf("round %d: snapshot %d: %v", round, sid, err)
			}
			if g := readAll(t, sv); !bytes.Equal(g, crashModel(n)) {
				t.Fatalf("round %d: snapshot %d after %d batches: %s", round, sid, n, firstDiff(g, crashModel(n)))
			}
		}
		if err := e.m.drain(); err != nil {
			t.Fatal(err)
		}
		e.audit()
		v.Close()
		e.close()
	}
}
