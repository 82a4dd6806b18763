package nbd

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// TestConcurrentConnectionsMatchModel runs 64 connections at once, each
// pipelining batches of random reads, writes, trims and zeroings (replies
// come back out of order) in its own region, and checks every read against a
// plain byte-slice model; at the end the whole export must equal the union
// of the models. Half the connections use structured replies, and their
// large reads come back as data and hole chunks.
func TestConcurrentConnectionsMatchModel(t *testing.T) {
	const (
		conns   = 64
		region  = 256 << 10
		batches = 25
	)
	rounds := batches
	if testing.Short() {
		rounds = 8
	}
	m := newMem(conns * region)
	// Two names for one disk: "try" reads inline on the reader goroutine
	// where the backend allows it, "disk" always on workers.
	ts := startServer(t, map[string]Backend{"disk": m, "try": tryMem{m}}, func(s *Server) { s.Workers = 8 })

	models := make([][]byte, conns)
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for ci := range conns {
		models[ci] = make([]byte, region)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- runModelConn(t, ts.sock, ci, models[ci], rounds)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	want := bytes.Join(models, nil)
	if !bytes.Equal(m.snapshot(), want) {
		t.Fatal("export content differs from the model")
	}
	if holeChunks.Load() == 0 {
		t.Fatal("no read was answered with hole chunks")
	}
}

// holeChunks counts OFFSET_HOLE chunks the model connections received.
var holeChunks atomic.Int64

func runModelConn(t *testing.T, sock string, ci int, model []byte, rounds int) error {
	const slot = 4096
	rng := rand.New(rand.NewPCG(uint64(ci), 42))
	rc := dialRaw(t, "unix", sock)
	rc.greet(3)
	structured := ci%2 == 0
	export := "disk"
	if ci%4 >= 2 {
		export = "try"
	}
	rc.goExport(export, structured, false)
	base := uint64(ci) * uint64(len(model))
	nslots := len(model) / slot
	type op struct {
		typ     uint16
		off, n  int // relative to the region
		payload []byte
	}
	cookie := uint64(0)
	for range rounds {
		ops := map[uint64]op{}
		pending := map[uint64][2]uint64{}
		if structured && rng.IntN(4) == 0 {
			// A whole-region read alone in its batch: big enough for
			// hole chunks.
			cookie++
			ops[cookie] = op{typ: cmdRead, off: 0, n: len(model)}
			pending[cookie] = [2]uint64{base, uint64(len(model))}
			rc.queue(0, cmdRead, cookie, base, uint32(len(model)), nil)
		} else {
			// Distinct slots per batch: requests in flight together
			// never overlap, so their order does not matter.
			perm := rng.Perm(nslots)[:12]
			for _, s := range perm {
				cookie++
				sub := rng.IntN(8) * 512
				n := 512 * (1 + rng.IntN((slot-sub)/512))
				o := op{off: s*slot + sub, n: n}
				switch k := rng.IntN(10); {
				case k < 4:
					o.typ = cmdRead
					pending[cookie] = [2]uint64{base + uint64(o.off), uint64(n)}
				case k < 8:
					o.typ = cmdWrite
					o.payload = pattern(cookie+uint64(ci)<<32, n)
				case k < 9:
					o.typ = cmdTrim
					o.off, o.n = s*slot, slot // whole block: the model is exact
				default:
					o.typ = cmdWriteZeroes
				}
				ops[cookie] = o
				rc.queue(0, o.typ, cookie, base+uint64(o.off), uint32(o.n), o.payload)
			}
		}
		rc.flush()
		partial := map[uint64]*reply{}
		snapshot := bytes.Clone(model)
		for range len(ops) {
			rp, err := rc.readReply(pending, partial)
			if err != nil {
				return fmt.Errorf("conn %d: %w", ci, err)
			}
			o, ok := ops[rp.cookie]
			if !ok {
				return fmt.Errorf("conn %d: reply for unknown cookie %d", ci, rp.cookie)
			}
			delete(ops, rp.cookie)
			if rp.errno != 0 {
				return fmt.Errorf("conn %d: op %d errno %d", ci, o.typ, rp.errno)
			}
			switch o.typ {
			case cmdRead:
				holeChunks.Add(int64(rp.holes))
				if !bytes.Equal(rp.data, snapshot[o.off:o.off+o.n]) {
					return fmt.Errorf("conn %d: read %d+%d differs from the model", ci, o.off, o.n)
				}
			case cmdWrite:
				copy(model[o.off:], o.payload)
			case cmdTrim, cmdWriteZeroes:
				clear(model[o.off : o.off+o.n])
			}
		}
	}
	rc.send(reqBytes(0, cmdDisc, 0, 0, 0, nil))
	return nil
}
