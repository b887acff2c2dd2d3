package gmail

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func readRaw(t testing.TB, reply string) ([]byte, error) {
	t.Helper()
	r := newRawReader(io.NopCloser(strings.NewReader(reply)), func() {}, time.Minute)
	defer r.Close()
	return io.ReadAll(r)
}

func TestRawReader(t *testing.T) {
	msg := []byte("From: a@example.org\r\nSubject: \xc3\xa9t\xc3\xa9 ~?>\r\n\r\nbody ???>>>\r\n")
	url := base64.URLEncoding.EncodeToString(msg)
	std := base64.StdEncoding.EncodeToString(msg)
	if !strings.ContainsAny(std, "+/") || !strings.HasSuffix(url, "=") {
		t.Fatalf("the test message must exercise + / and padding: %s", std)
	}
	for _, tc := range []struct{ name, reply string }{
		{"raw only", `{"raw":"` + url + `"}`},
		{"raw last", `{"id":"18c1","threadId":"18c1","labelIds":["INBOX","UNREAD"],"snippet":"raw: \"x\" {","sizeEstimate":1234,"historyId":"987600","internalDate":"1700000000000","raw":"` + url + `"}`},
		{"raw first", `{"raw":"` + url + `","id":"x","payload":{"raw":"nested","headers":[{"name":"raw","value":"v"}]}}`},
		{"unpadded", `{"raw":"` + strings.TrimRight(url, "=") + `"}`},
		{"standard alphabet", `{"raw":"` + std + `"}`},
		{"escaped slash", `{"raw":"` + strings.ReplaceAll(std, "/", `\/`) + `"}`},
		{"escaped padding", `{"raw":"` + strings.ReplaceAll(url, "=", `\u003d`) + `"}`},
		{"spaced", "{\n  \"id\" : \"x\",\n  \"raw\" :\t\"" + url + "\"\n}"},
		{"line breaks", `{"raw":"` + url[:8] + `\r\n` + url[8:] + `"}`},
		{"key inside a value first", `{"snippet":"\"raw\":\"AAAA\"","raw":"` + url + `"}`},
	} {
		got, err := readRaw(t, tc.reply)
		if err != nil || !bytes.Equal(got, msg) {
			t.Errorf("%s: %q, %v", tc.name, got, err)
		}
	}
	// Proto JSON leaves an empty string out: an empty message.
	for _, reply := range []string{`{"id":"x","sizeEstimate":3}`, `{"payload":{"raw":"QUJD"}}`, `{}`, `{"raw":""}`} {
		if got, err := readRaw(t, reply); err != nil || len(got) != 0 {
			t.Errorf("%s: %q, %v; want an empty message", reply, got, err)
		}
	}
	for _, tc := range []struct{ name, reply, want string }{
		{"truncated before raw", `{"id":"x","sizeEstimate":3`, `ended before a "raw" field`},
		{"truncated", `{"raw":"` + url[:10], "unexpected EOF"},
		{"not a string", `{"raw":12}`, "not a string"},
		{"bad character", `{"raw":"QU!D"}`, "illegal base64"},
		{"empty", ``, `ended before a "raw" field`},
	} {
		_, err := readRaw(t, tc.reply)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

// FuzzRawReader checks the streaming decoder against decoding the
// unmarshalled field whole, for any message and reply layout.
func FuzzRawReader(f *testing.F) {
	f.Add([]byte("Subject: x\r\n\r\nbody\r\n"), "", false, false)
	f.Add([]byte{0xfb, 0xff, 0xfe}, `"id":"a",`, true, true)
	f.Fuzz(func(t *testing.T, msg []byte, prefix string, std, escape bool) {
		enc := base64.URLEncoding.EncodeToString(msg)
		if std {
			enc = base64.StdEncoding.EncodeToString(msg)
		}
		field, _ := json.Marshal(enc) // Go escapes nothing here
		s := string(field)
		if escape {
			s = strings.ReplaceAll(strings.ReplaceAll(s, "/", `\/`), "=", `\u003d`)
		}
		pre, _ := json.Marshal(prefix)
		reply := `{"snippet":` + string(pre) + `,"raw":` + s + `}`
		var v struct{ Raw string }
		if err := json.Unmarshal([]byte(reply), &v); err != nil {
			t.Fatalf("test reply is not JSON: %v", err)
		}
		want, err := decodeAll(v.Raw)
		if err != nil {
			t.Fatal(err)
		}
		got, err := readRaw(t, reply)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("streamed %q, %v; whole %q", got, err, want)
		}
	})
}

func TestRawReaderStall(t *testing.T) {
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	r := newRawReader(pr, cancel, 50*time.Millisecond)
	defer r.Close()
	go func() {
		pw.Write([]byte(`{"raw":"QUJD`))
		<-ctx.Done() // the stall limit cancels the request
		pw.CloseWithError(ctx.Err())
	}()
	buf := make([]byte, 64)
	var err error
	for err == nil {
		_, err = r.Read(buf)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("a stalled reply ended with %v, want the request cancelled", err)
	}
}

// BenchmarkOpenRaw measures streaming a 20 MB message out of a JSON
// reply: allocations stay at the buffers, whatever the size.
func BenchmarkOpenRaw(b *testing.B) {
	msg := bytes.Repeat([]byte("a line of a large message, 64 octets long, for the benchmark\r\n"), 20<<20/62)
	reply := []byte(`{"raw":"` + base64.URLEncoding.EncodeToString(msg) + `"}`)
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		r := newRawReader(io.NopCloser(bytes.NewReader(reply)), func() {}, time.Minute)
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{r}, buf)
		r.Close()
		if err != nil || n != int64(len(msg)) {
			b.Fatal(n, err)
		}
	}
}
