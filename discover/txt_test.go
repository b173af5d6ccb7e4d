package discover

import (
	"slices"
	"strings"
	"testing"
)

const (
	idA = "0123456789abcdef0123456789abcdef"
	idB = "fedcba9876543210fedcba9876543210"
)

func TestEncodeTXT(t *testing.T) {
	ok := Announcement{ID: idA, Name: "rack 3 / node 7", Group: "lab", State: StateIdle, Version: 2, Port: 7000}
	noGroup := ok
	noGroup.Group = ""
	longest := ok
	longest.Name = strings.Repeat("n", 250)
	longest.Group = strings.Repeat("g", 249)

	for _, tc := range []struct {
		name    string
		a       Announcement
		want    []string
		wantErr string // substring
	}{
		{name: "all fields", a: ok,
			want: []string{"v=2", "id=" + idA, "name=rack 3 / node 7", "group=lab", "state=idle"}},
		{name: "no group", a: noGroup,
			want: []string{"v=2", "id=" + idA, "name=rack 3 / node 7", "state=idle"}},
		{name: "longest name and group", a: longest,
			want: []string{"v=2", "id=" + idA, "name=" + longest.Name, "group=" + longest.Group, "state=idle"}},
		{name: "name one byte too long", a: with(ok, func(a *Announcement) { a.Name = strings.Repeat("n", 251) }),
			wantErr: "name is 251 bytes; mDNS carries at most 250"},
		{name: "group one byte too long", a: with(ok, func(a *Announcement) { a.Group = strings.Repeat("é", 125) }),
			wantErr: "group is 250 bytes; mDNS carries at most 249"},
		{name: "empty name", a: with(ok, func(a *Announcement) { a.Name = "" }), wantErr: "name is empty"},
		{name: "newline in name", a: with(ok, func(a *Announcement) { a.Name = "a\nb" }), wantErr: "name"},
		{name: "NUL in group", a: with(ok, func(a *Announcement) { a.Group = "a\x00" }), wantErr: "group"},
		{name: "DEL in name", a: with(ok, func(a *Announcement) { a.Name = "a\x7f" }), wantErr: "control character"},
		{name: "C1 control in name", a: with(ok, func(a *Announcement) { a.Name = "a\u0085" }), wantErr: "control character"},
		{name: "invalid UTF-8 in name", a: with(ok, func(a *Announcement) { a.Name = "a\xff" }), wantErr: "UTF-8"},
		{name: "uppercase id", a: with(ok, func(a *Announcement) { a.ID = strings.ToUpper(idA) }), wantErr: "node id"},
		{name: "short id", a: with(ok, func(a *Announcement) { a.ID = idA[:31] }), wantErr: "node id"},
		{name: "non-hex id", a: with(ok, func(a *Announcement) { a.ID = "g" + idA[1:] }), wantErr: "node id"},
		{name: "unknown state", a: with(ok, func(a *Announcement) { a.State = "sleeping" }), wantErr: "state"},
		{name: "empty state", a: with(ok, func(a *Announcement) { a.State = "" }), wantErr: "state"},
		{name: "version 0", a: with(ok, func(a *Announcement) { a.Version = 0 }), wantErr: "version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := encodeTXT(tc.a)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("encodeTXT: err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("encodeTXT: %v", err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("encodeTXT = %q, want %q", got, tc.want)
			}
			for _, s := range got {
				if len(s) > maxTXTString {
					t.Errorf("string of %d bytes: %.20q...", len(s), s)
				}
			}
			f, err := parseTXT(got)
			if err != nil {
				t.Fatalf("parseTXT(encodeTXT(a)): %v", err)
			}
			want := txtFields{Version: tc.a.Version, ID: tc.a.ID, Name: tc.a.Name, Group: tc.a.Group, State: tc.a.State}
			if f != want {
				t.Fatalf("round trip = %+v, want %+v", f, want)
			}
		})
	}
}

func with(a Announcement, change func(*Announcement)) Announcement {
	change(&a)
	return a
}

func TestParseTXT(t *testing.T) {
	base := txtFields{Version: 1, ID: idA}
	junk := make([]string, maxTXTStrings)
	for i := range junk {
		junk[i] = "x=1"
	}
	for _, tc := range []struct {
		name    string
		txt     []string
		want    txtFields
		wantErr string
	}{
		{name: "minimal", txt: []string{"v=1", "id=" + idA}, want: base},
		{name: "all fields", txt: []string{"v=3", "id=" + idA, "name=n", "group=g", "state=busy"},
			want: txtFields{Version: 3, ID: idA, Name: "n", Group: "g", State: StateBusy}},
		{name: "unknown keys and flags ignored", txt: []string{"colour=blue", "v=1", "flag", "", "=x", "id=" + idA}, want: base},
		{name: "keys are case-insensitive", txt: []string{"V=1", "ID=" + idA, "Name=n"},
			want: txtFields{Version: 1, ID: idA, Name: "n"}},
		{name: "first of a repeated key wins", txt: []string{"v=1", "id=" + idA, "id=" + idB, "name=first", "name=second"},
			want: txtFields{Version: 1, ID: idA, Name: "first"}},
		{name: "value may hold =", txt: []string{"v=1", "id=" + idA, "name=a=b"},
			want: txtFields{Version: 1, ID: idA, Name: "a=b"}},
		{name: "unknown state kept", txt: []string{"v=1", "id=" + idA, "state=draining"},
			want: txtFields{Version: 1, ID: idA, State: "draining"}},
		{name: "empty group", txt: []string{"v=1", "id=" + idA, "group="}, want: base},
		{name: "no strings", txt: nil, wantErr: "no protocol version"},
		{name: "no id", txt: []string{"v=1"}, wantErr: "no node id"},
		{name: "no version", txt: []string{"id=" + idA}, wantErr: "no protocol version"},
		{name: "version 0", txt: []string{"v=0", "id=" + idA}, wantErr: "1 or more"},
		{name: "negative version", txt: []string{"v=-1", "id=" + idA}, wantErr: "not a decimal"},
		{name: "plus version", txt: []string{"v=+1", "id=" + idA}, wantErr: "not a decimal"},
		{name: "huge version", txt: []string{"v=99999999999999999999", "id=" + idA}, wantErr: "not a decimal"},
		{name: "empty version", txt: []string{"v=", "id=" + idA}, wantErr: "not a decimal"},
		{name: "uppercase id", txt: []string{"v=1", "id=" + strings.ToUpper(idA)}, wantErr: "node id"},
		{name: "long id", txt: []string{"v=1", "id=" + idA + "00"}, wantErr: "node id"},
		{name: "control character in name", txt: []string{"v=1", "id=" + idA, "name=\x1b[31mred"}, wantErr: "control character"},
		{name: "invalid UTF-8 in group", txt: []string{"v=1", "id=" + idA, "group=\xc3"}, wantErr: "UTF-8"},
		{name: "over-long string ignored", txt: []string{"v=1", "id=" + idA, "name=" + strings.Repeat("n", 300)}, want: base},
		{name: "over-long id ignored, so none", txt: []string{"v=1", "id=" + idA + strings.Repeat("0", 300)}, wantErr: "no node id"},
		{name: "strings past the limit ignored", txt: append(append([]string{"v=1"}, junk...), "id="+idA), wantErr: "no node id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseTXT(tc.txt)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseTXT: got %+v, err = %v, want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseTXT: %v", err)
			}
			if got != tc.want {
				t.Fatalf("parseTXT = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// FuzzParseTXT feeds parseTXT the strings of a TXT record in wire form: each
// string is a length byte and that many bytes.
func FuzzParseTXT(f *testing.F) {
	f.Add(wireTXT("v=1", "id="+idA, "name=alpha", "group=red", "state=idle"))
	f.Add(wireTXT("V=1", "ID="+idA, "id="+idB))
	f.Add(wireTXT("v=99999999999999999999", "id="+idA))
	f.Add(wireTXT("v=1", "id="+idA, "name=\xff\x00"))
	f.Add([]byte{5, 'v', '='})
	f.Fuzz(func(t *testing.T, wire []byte) {
		var txt []string
		for len(wire) > 0 {
			n := min(int(wire[0]), len(wire)-1)
			txt = append(txt, string(wire[1:1+n]))
			wire = wire[1+n:]
		}
		got, err := parseTXT(txt)
		if err != nil {
			return
		}
		if !validID(got.ID) || got.Version < 1 {
			t.Fatalf("parseTXT(%q) = %+v: accepted a bad id or version", txt, got)
		}
		for _, s := range []string{got.Name, got.Group, got.State} {
			if checkText(s) != nil || len(s) > maxTXTString {
				t.Fatalf("parseTXT(%q) = %+v: accepted a bad value %q", txt, got, s)
			}
		}
		if got.State != StateIdle && got.State != StateBusy || got.Name == "" {
			return
		}
		again, err := encodeTXT(Announcement{ID: got.ID, Name: got.Name, Group: got.Group, State: got.State, Version: got.Version, Port: 1})
		if err != nil {
			return // a value near 255 bytes can fit under a short key only
		}
		if back, err := parseTXT(again); err != nil || back != got {
			t.Fatalf("re-encoded %+v as %q, parsed back %+v, %v", got, again, back, err)
		}
	})
}

func wireTXT(ss ...string) []byte {
	var b []byte
	for _, s := range ss {
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	return b
}

func TestInstanceName(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"alpha", "alpha-01234567"},
		{"Rack-3", "Rack-3-01234567"},
		{"beta box.local", "beta-box-local-01234567"},
		{"Büro", "B-ro-01234567"},
		{"", "treecast-01234567"},
		{strings.Repeat("x", 100), strings.Repeat("x", 54) + "-01234567"},
	} {
		got := instanceName(tc.name, idA)
		if got != tc.want {
			t.Errorf("instanceName(%q) = %q, want %q", tc.name, got, tc.want)
		}
		if len(got) > 63 {
			t.Errorf("instanceName(%q) is %d bytes, over a DNS label's 63", tc.name, len(got))
		}
	}
}
