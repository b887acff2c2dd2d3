package oauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// TestRefreshTimeout: a token endpoint that never answers fails the
// refresh in time instead of hanging every login that waits for it.
func TestRefreshTimeout(t *testing.T) {
	defer func(d time.Duration) { refreshTimeout = d }(refreshTimeout)
	refreshTimeout = 200 * time.Millisecond
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hang }))
	defer srv.Close()
	defer close(hang)

	store := &Store{Dir: t.TempDir()}
	if err := store.Save("ann", &oauth2.Token{RefreshToken: "rt"}); err != nil {
		t.Fatal(err)
	}
	cfg := &oauth2.Config{ClientID: "c", Endpoint: oauth2.Endpoint{TokenURL: srv.URL, AuthStyle: oauth2.AuthStyleInParams}}
	src := NewSource(context.Background(), "ann", cfg, store, nil)
	start := time.Now()
	_, err := src.Token()
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("refresh against a silent endpoint: %v after %v", err, time.Since(start))
	}
}
