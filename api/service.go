package api

import (
	"context"
	"sync"

	"go.uber.org/zap"

	"strata/layer"
	"strata/storage"
)

// Service is the resource model: folders, images, disks, snapshots,
// operations, access bindings and quotas, kept in the store's catalog and
// backed by the layer manager. Its methods take the caller's Identity and
// return *Error values; Handler puts HTTP on it and OpenExport serves the
// NBD server.
type Service struct {
	store  *storage.Store
	layers *layer.Manager
	cfg    Config
	log    *zap.Logger

	// mu serialises catalog writes: they are short, and one writer at a
	// time keeps read-check-write sequences (names, quotas) free of
	// transaction conflicts.
	mu sync.Mutex

	ctx    context.Context // cancelled by Close: stops background operations
	cancel context.CancelFunc
	wg     sync.WaitGroup

	opsMu   sync.Mutex
	running map[string]*runningOp

	wmu     sync.Mutex
	writers map[string]*writer // disk id -> its current NBD writer
}

// New returns the service over store and layers. Operations a previous run
// left unfinished are marked ABORTED and the resources they half-made are
// removed.
func New(store *storage.Store, layers *layer.Manager, cfg Config) (*Service, error) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{
		store:   store,
		layers:  layers,
		cfg:     cfg,
		log:     cfg.logger(),
		ctx:     ctx,
		cancel:  cancel,
		running: make(map[string]*runningOp),
		writers: make(map[string]*writer),
	}
	if err := s.recover(); err != nil {
		cancel()
		return nil, err
	}
	return s, nil
}

// Close cancels background operations and waits for them to record their
// end. It closes neither the store nor the layer manager.
func (s *Service) Close() error {
	s.cancel()
	s.wg.Wait()
	return nil
}

// update runs fn in one catalog write transaction.
func (s *Service) update(fn func(tx *storage.Txn) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.store.Update(fn)
}

func (s *Service) view(fn func(tx *storage.Txn) error) error {
	return s.store.View(fn)
}
