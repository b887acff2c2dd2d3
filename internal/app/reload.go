package app

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"

	"github.com/popbridge/popbridge/backends/accounts"
	"github.com/popbridge/popbridge/config"
	"github.com/popbridge/popbridge/proxy"
)

// swapBackend is the running server's proxy.Backend: it hands each login
// to the current accounts router, which a configuration reload replaces.
// A session that has logged in keeps the Mailbox it got.
type swapBackend struct {
	cur atomic.Pointer[accounts.Router]
}

var _ proxy.Backend = (*swapBackend)(nil)

func newSwapBackend(r *accounts.Router) *swapBackend {
	b := &swapBackend{}
	b.cur.Store(r)
	return b
}

// Login implements proxy.Backend.
func (b *swapBackend) Login(ctx context.Context, user, pass string) (proxy.Mailbox, error) {
	return b.cur.Load().Login(ctx, user, pass)
}

// reloader reloads the accounts of a running server from its
// configuration file.
type reloader struct {
	path    string
	backend *swapBackend
	srv     *proxy.Server // its cleartext_auth policy is reloaded; nil in tests of accounts only
	sends   *sendSwap     // the SMTP senders, reloaded with the accounts; nil without SMTP listeners
	st      *state        // shared: the store and body cache stay open
	log     *zerolog.Logger

	mu  sync.Mutex
	cfg *config.Config // the configuration in use
}

// reload reads the configuration file again. If it is valid and every
// account's backend can be built, the new accounts take over for the
// next logins; otherwise the error is logged and returned and nothing
// changes. Changed settings that only a restart applies are logged.
func (r *reloader) reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	log := r.log
	cfg, err := config.Load(r.path)
	var policy proxy.CleartextPolicy
	if err == nil {
		policy, err = CleartextPolicy(cfg.CleartextAuth)
	}
	if err == nil {
		var router *accounts.Router
		var sends *senderSet
		if router, err = newRouter(cfg, r.st); err == nil && r.sends != nil {
			sends, err = newSenders(cfg, r.st)
		}
		if err == nil {
			r.backend.cur.Store(router)
			if sends != nil {
				r.sends.cur.Store(sends)
			}
			r.st.commitBackends() // stops the background work of the backends replaced
			if r.srv != nil {
				r.srv.SetCleartext(policy)
			}
		}
	}
	if err != nil {
		r.st.discardBackends()
		log.Error().Err(err).Str("config", r.path).Msg("configuration not reloaded; the previous one stays in use")
		return err
	}
	if keys := needRestart(r.cfg, cfg); len(keys) > 0 {
		log.Warn().Strs("keys", keys).Msg("configuration changes that need a restart; not applied")
	}
	added, removed, changed := diffAccounts(r.cfg.Accounts, cfg.Accounts)
	log.Info().Str("config", r.path).Int("accounts", len(cfg.Accounts)).
		Strs("added", added).Strs("removed", removed).Strs("changed", changed).
		Msg("configuration reloaded: new logins use the new accounts; sessions in progress keep theirs")
	r.cfg = cfg
	return nil
}

// needRestart lists the top-level keys whose change only a restart
// applies: every one but accounts and cleartext_auth. They are found by
// the yaml tags of config.Config, so that a new section is covered
// without a change here.
func needRestart(old, cur *config.Config) []string {
	var keys []string
	o, c := reflect.ValueOf(old).Elem(), reflect.ValueOf(cur).Elem()
	for i := range o.NumField() {
		f := o.Type().Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || key == "" || key == "accounts" || key == "cleartext_auth" {
			continue
		}
		if !reflect.DeepEqual(o.Field(i).Interface(), c.Field(i).Interface()) {
			keys = append(keys, key)
		}
	}
	return keys
}

// diffAccounts compares two account lists by user name.
func diffAccounts(old, cur []config.Account) (added, removed, changed []string) {
	find := func(as []config.Account, user string) *config.Account {
		i := slices.IndexFunc(as, func(a config.Account) bool { return a.User == user })
		if i < 0 {
			return nil
		}
		return &as[i]
	}
	for _, a := range cur {
		switch o := find(old, a.User); {
		case o == nil:
			added = append(added, a.User)
		case !reflect.DeepEqual(*o, a):
			changed = append(changed, a.User)
		}
	}
	for _, a := range old {
		if find(cur, a.User) == nil {
			removed = append(removed, a.User)
		}
	}
	return added, removed, changed
}

// current returns the configuration in use.
func (r *reloader) current() *config.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfg
}
