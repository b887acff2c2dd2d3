package cache

import "sync"

// Holds counts the sessions of one process that hold each account, and
// the Forgets in progress, which exclude each other: the Hold and Forget
// rule of every StateStore (Store here, pgstore.Store across replicas).
// The zero value is ready to use.
type Holds struct {
	mu         sync.Mutex
	changed    *sync.Cond // a Forget finished
	sessions   map[string]int
	forgetting map[string]int
}

func (h *Holds) init() {
	if h.changed == nil {
		h.changed = sync.NewCond(&h.mu)
		h.sessions = map[string]int{}
		h.forgetting = map[string]int{}
	}
}

// Hold counts a session on account, waiting while the account is being
// forgotten, until release is called; release may be called more than
// once.
func (h *Holds) Hold(account string) (release func()) {
	h.mu.Lock()
	h.init()
	for h.forgetting[account] > 0 {
		h.changed.Wait()
	}
	h.sessions[account]++
	h.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			if h.sessions[account]--; h.sessions[account] == 0 {
				delete(h.sessions, account)
			}
			h.mu.Unlock()
		})
	}
}

// Forget reports whether no session holds account; if so, Holds of it
// wait until done is called.
func (h *Holds) Forget(account string) (done func(), ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.init()
	if h.sessions[account] > 0 {
		return nil, false
	}
	h.forgetting[account]++
	return func() {
		h.mu.Lock()
		if h.forgetting[account]--; h.forgetting[account] == 0 {
			delete(h.forgetting, account)
		}
		h.mu.Unlock()
		h.changed.Broadcast()
	}, true
}

// Count returns how many sessions hold account now.
func (h *Holds) Count(account string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sessions[account]
}

// Forgetting reports whether a Forget of account is in progress.
func (h *Holds) Forgetting(account string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.forgetting[account] > 0
}
