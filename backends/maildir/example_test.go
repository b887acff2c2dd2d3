package maildir_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/crypto/bcrypt"

	"github.com/popbridge/popbridge/backends/accounts"
	"github.com/popbridge/popbridge/backends/maildir"
	"github.com/popbridge/popbridge/proxy"
)

// A Maildir served to one account: the accounts router checks the
// password and opens the maildrop, whose UIDL is the Maildir unique
// name and whose size counts CRLF line ends, as POP3 sends them.
func Example() {
	dir, err := os.MkdirTemp("", "maildir-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			panic(err)
		}
	}
	msg := "Subject: hello\n\nHi Alice.\n"
	if err := os.WriteFile(filepath.Join(dir, "new", "1700000000.M1P1.example"), []byte(msg), 0o600); err != nil {
		panic(err)
	}

	box, err := maildir.New(maildir.Options{Path: dir, Account: "alice"})
	if err != nil {
		panic(err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		panic(err)
	}
	router, err := accounts.New([]accounts.Account{{User: "alice", PasswordHash: string(hash), Backend: box}}, accounts.Options{})
	if err != nil {
		panic(err)
	}

	ctx := context.Background()
	_, err = router.Login(ctx, "alice", "wrong")
	fmt.Println("wrong password refused:", errors.Is(err, proxy.ErrAuthFailed))

	mb, err := router.Login(ctx, "alice", "secret")
	if err != nil {
		panic(err)
	}
	defer mb.Close()
	list, err := mb.List(ctx)
	if err != nil {
		panic(err)
	}
	for _, m := range list {
		fmt.Println("message", m.UID, m.Size, "octets")
	}
	rc, err := mb.Open(ctx, list[0].UID)
	if err != nil {
		panic(err)
	}
	defer rc.Close()
	body, err := io.ReadAll(rc)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%q\n", body)
	// Output:
	// wrong password refused: true
	// message 1700000000.M1P1.example 29 octets
	// "Subject: hello\n\nHi Alice.\n"
}
