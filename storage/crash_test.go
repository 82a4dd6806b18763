package storage

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestCrashChild is the writer that TestSyncedWritesSurviveKill kills; it
// does nothing unless started by it.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("STRATA_CRASH_DIR")
	if dir == "" {
		t.Skip("helper process for TestSyncedWritesSurviveKill")
	}
	s, err := Open(dir, testOptions())
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	start, _ := strconv.Atoi(os.Getenv("STRATA_CRASH_START"))
	rng := rand.New(rand.NewPCG(uint64(start), 7))
	for i := start; ; i++ {
		l := s.NewLease()
		raw := textChunk(rng, 4096)
		binary.LittleEndian.PutUint64(raw, uint64(i)) // distinct content per record
		id, err := s.Put(raw, l)
		if err != nil {
			fmt.Println("put:", err)
			os.Exit(2)
		}
		// Chunks no record will reference, as an import that fails
		// leaves: fresh under the lease until its Release queues them,
		// so most kills land while a lease holds fresh chunks, which
		// Open must then queue from their packs' markers (fresh.go).
		extra := make([][]byte, 16)
		for j := range extra {
			extra[j] = textChunk(rng, 4096)
		}
		if _, err := s.PutMany(extra, l); err != nil {
			fmt.Println("put many:", err)
			os.Exit(2)
		}
		err = s.Update(func(tx *Txn) error {
			if err := tx.Set(fmt.Appendf(nil, "rec/%08d", i), binary.LittleEndian.AppendUint64(nil, uint64(id))); err != nil {
				return err
			}
			return tx.AddRef(id, 1)
		})
		l.Release()
		if err != nil {
			fmt.Println("update:", err)
			os.Exit(2)
		}
		if i%5 == 4 {
			if err := s.Sync(); err != nil {
				fmt.Println("sync:", err)
				os.Exit(2)
			}
			fmt.Printf("synced %d\n", i)
		}
	}
}

// TestSyncedWritesSurviveKill kills a writing child process with SIGKILL
// at random points, many times over one store: after each reopen every
// record the child reported synced is there, its chunk reads back, and the
// reference counts audit clean.
func TestSyncedWritesSurviveKill(t *testing.T) {
	dir := t.TempDir()
	rounds := 8
	if testing.Short() {
		rounds = 4
	}
	rng := rand.New(rand.NewPCG(21, 22))
	next := 0
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
		cmd.Env = append(os.Environ(), "STRATA_CRASH_DIR="+dir, fmt.Sprintf("STRATA_CRASH_START=%d", next))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAfter := 1 + rng.IntN(20)
		synced := -1
		sc := bufio.NewScanner(out)
		for n := 0; n < killAfter && sc.Scan(); {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "synced "); ok {
				synced, _ = strconv.Atoi(v)
				n++
			} else if strings.TrimSpace(line) != "" && !strings.HasPrefix(line, "=== RUN") {
				t.Logf("child: %s", line)
			}
		}
		cmd.Process.Kill()
		cmd.Wait()
		if synced < next {
			t.Fatalf("round %d: child synced nothing", round)
		}

		s, err := Open(dir, testOptions())
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		var ids []ChunkID
		err = s.View(func(tx *Txn) error {
			return tx.Iterate([]byte("rec/"), func(k, v []byte) error {
				ids = append(ids, ChunkID(binary.LittleEndian.Uint64(v)))
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) < synced+1 {
			t.Fatalf("round %d: %d records after reopen, %d were synced", round, len(ids), synced+1)
		}
		for _, id := range ids {
			if _, err := s.Get(id, nil); err != nil {
				t.Fatalf("round %d: chunk %d: %v", round, id, err)
			}
		}
		rep, err := s.Audit(context.Background(), refsOf(ids...), true)
		if err != nil || !rep.Clean() {
			t.Fatalf("round %d: audit %+v %v", round, rep, err)
		}
		// Every chunk no record references is collected: none was left
		// without a reference record by the kill.
		if _, err := s.GC(context.Background()); err != nil {
			t.Fatal(err)
		}
		<-s.Counted() // a kill leaves no saved counters: Open recounts
		if got := s.Stats().Chunks; got != int64(len(ids)) {
			t.Fatalf("round %d: %d chunks after GC, %d referenced", round, got, len(ids))
		}
		next = len(ids)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
