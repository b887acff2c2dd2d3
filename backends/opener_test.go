package backends

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestLoginHidesPassword(t *testing.T) {
	l := Login{User: "alice", Password: "s3cret-pass"}
	j, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprint(l), fmt.Sprintf("%v %+v %#v %s", l, l, l, l), fmt.Sprintf("%v", &l), string(j)} {
		if strings.Contains(s, "s3cret") {
			t.Errorf("password printed: %s", s)
		}
		if !strings.Contains(s, "alice") && !strings.HasPrefix(s, "{") {
			t.Errorf("user missing: %s", s)
		}
	}
}
