package admin

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// LogRing is an io.Writer for zerolog's JSON lines that keeps, per
// account (the "account" or "user" field), the last PerAccount lines in
// readable form, for the account page. Lines without an account are
// dropped. At most MaxAccounts accounts are kept: the one written to
// least recently goes first. Put it beside the real log output with
// zerolog.MultiLevelWriter. Safe for concurrent use.
type LogRing struct {
	PerAccount  int // 0 means 50
	MaxAccounts int // 0 means 1000
	mu          sync.Mutex
	rings       map[string]*ring
	clock       uint64
}

type ring struct {
	lines []string
	next  int // where the next line goes once full
	used  uint64
}

// maxLine bounds one kept line.
const maxLine = 1000

// Write takes one zerolog line; it never fails.
func (l *LogRing) Write(p []byte) (int, error) {
	var m map[string]any
	if err := json.Unmarshal(p, &m); err != nil {
		return len(p), nil
	}
	account, _ := m["account"].(string)
	if account == "" {
		account, _ = m["user"].(string)
	}
	if account == "" {
		return len(p), nil
	}
	line := formatLine(m)
	l.mu.Lock()
	defer l.mu.Unlock()
	per, maxAcc := l.PerAccount, l.MaxAccounts
	if per <= 0 {
		per = 50
	}
	if maxAcc <= 0 {
		maxAcc = 1000
	}
	if l.rings == nil {
		l.rings = map[string]*ring{}
	}
	r := l.rings[account]
	if r == nil {
		for len(l.rings) >= maxAcc {
			var oldest string
			var at uint64
			for a, o := range l.rings {
				if oldest == "" || o.used < at {
					oldest, at = a, o.used
				}
			}
			delete(l.rings, oldest)
		}
		r = &ring{}
		l.rings[account] = r
	}
	l.clock++
	r.used = l.clock
	if len(r.lines) < per {
		r.lines = append(r.lines, line)
	} else {
		r.lines[r.next] = line
		r.next = (r.next + 1) % len(r.lines)
	}
	return len(p), nil
}

// Lines returns account's kept lines, oldest first.
func (l *LogRing) Lines(account string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.rings[account]
	if r == nil {
		return nil
	}
	return append(slices.Clone(r.lines[r.next:]), r.lines[:r.next]...)
}

// formatLine writes a zerolog entry as "15:04:05 LEVEL message k=v ...".
func formatLine(m map[string]any) string {
	var b strings.Builder
	if t, ok := m["time"].(string); ok {
		if tt, err := time.Parse(time.RFC3339, t); err == nil {
			t = tt.Local().Format("2006-01-02 15:04:05")
		}
		b.WriteString(t + " ")
	}
	if lv, ok := m["level"].(string); ok {
		b.WriteString(strings.ToUpper(lv) + " ")
	}
	if msg, ok := m["message"].(string); ok {
		b.WriteString(msg)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		switch k {
		case "time", "level", "message", "account", "user":
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%v", k, m[k])
	}
	s := b.String()
	if len(s) > maxLine {
		s = s[:maxLine] + "…"
	}
	return s
}
