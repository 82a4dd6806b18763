package layer

import (
	"fmt"
	"sync"
	"testing"

	"strata/storage"
)

// TestGroupCommitStoresEveryRequest commits from many goroutines at once
// (sets and deletes, some requests bigger than one shared transaction):
// every call returns only once its records are in the store.
func TestGroupCommitStoresEveryRequest(t *testing.T) {
	e := newEnv(t, 16<<10)
	g := &groupCommit{store: e.store}
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				n := 1 + (w*i)%7
				if i == 17 {
					n = groupCommitMax + 5 // commits alone
				}
				recs := make([]kv, n)
				for j := range recs {
					recs[j] = kv{[]byte(fmt.Sprintf("test/%d/%d/%d", w, i, j)), []byte{byte(j)}}
				}
				if i%5 == 4 { // delete what the previous request set
					prev := 1 + (w*(i-1))%7
					recs = recs[:0]
					for j := 0; j < prev; j++ {
						recs = append(recs, kv{key: []byte(fmt.Sprintf("test/%d/%d/%d", w, i-1, j))})
					}
				}
				if err := g.commit(recs); err != nil {
					t.Error(err)
					return
				}
				if err := e.store.View(func(tx *storage.Txn) error {
					for _, r := range recs {
						_, err := tx.Get(r.key)
						if r.val != nil && err != nil {
							return fmt.Errorf("%s missing after commit: %v", r.key, err)
						}
						if r.val == nil && err == nil {
							return fmt.Errorf("%s still there after delete", r.key)
						}
					}
					return nil
				}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
