package build

import (
	"math/rand"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

const (
	pDep = "/nix/store/hhh36z1ld1hglvw2a8nwa3prg2p5gjq1-research-dep"
	pTop = "/nix/store/hrx9687aiqiwpmcrlqbwj9xgbfwpi5wj-research-top"
)

// Both spellings seen in practice: "nix-store --dump-db" (base16 hash,
// deriver filled in) and closureInfo's registration (sha256:nix32, no
// deriver, no final newline).
var dumpDB = pDep + "\n1245a5f06c34aeac0a66ca762381b0200641f6f6b5d7a0fa250c4c5314ca5ecd\n464\n/nix/store/8wjbh4hhlf3agqr3y9pjk8m9lqkjj4wz-research-dep.drv\n0\n" +
	pTop + "\nf50248636899bc1be000e0682cf27da7b081199921230a2c358ac02b7bf16089\n808\n/nix/store/sdn6xxia4q6jmjb9xnapanzs6ddcsbbj-research-top.drv\n1\n" + pDep + "\n"

var closureInfo = pDep + "\nsha256:06ykbqx4s34ml2z8znmmyq37hq08vdj26y6acq5arbildkq6kh8j\n464\n\n0\n" +
	pTop + "\nsha256:12b0y5xjph4a6ln0l8r1k4cq3c57gpr2qs7003h1pg4rd1ilh0pm\n808\n\n1\n" + pDep

func TestParseRegistration(t *testing.T) {
	for name, in := range map[string]string{"dump-db": dumpDB, "closureInfo": closureInfo} {
		recs, err := ParseRegistration(strings.NewReader(in))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(recs) != 2 || recs[0].Path != pDep || recs[1].Path != pTop || recs[1].NarSize != 808 ||
			len(recs[1].References) != 1 || recs[1].References[0] != pDep || len(recs[0].References) != 0 {
			t.Errorf("%s: %+v", name, recs)
		}
	}
	for _, bad := range []string{
		pDep + "\nabc\n464\n\n2\n" + pDep + "\n",   // fewer refs than announced
		pDep + "\nabc\n-1\n\n0\n",                  // negative size
		pDep + "\nabc\nx\n\n0\n",                   // size not a number
		pDep + "\nabc\n1\n\n99999999999\n",         // absurd count
		"/etc/passwd\nabc\n1\n\n0\n",               // not a store path
		pDep + "\nabc\n1\n/tmp/x\n0\n",             // deriver not a store path
		pDep + "\nabc\n1\n\n1\n/nix/store/short\n", // reference not a store path
		pDep + "\n\n1\n\n0\n",                      // empty hash
		pDep + "\nabc\n",                           // truncated
	} {
		if _, err := ParseRegistration(strings.NewReader(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzParseRegistration(f *testing.F) {
	f.Add(dumpDB)
	f.Add(closureInfo)
	f.Add(pDep + "\nabc\n464\n\n3\n")
	f.Fuzz(func(t *testing.T, in string) {
		recs, err := ParseRegistration(strings.NewReader(in))
		if err != nil {
			return
		}
		// What parses re-serialises to records that parse the same.
		var b strings.Builder
		for _, r := range recs {
			b.WriteString(r.Path + "\n" + r.NarHash + "\n")
			b.WriteString(strconv.FormatInt(r.NarSize, 10) + "\n" + r.Deriver + "\n" + strconv.Itoa(len(r.References)) + "\n")
			for _, ref := range r.References {
				b.WriteString(ref + "\n")
			}
		}
		again, err := ParseRegistration(strings.NewReader(b.String()))
		if err != nil || len(again) != len(recs) {
			t.Fatalf("re-parse: %v (%d vs %d records)", err, len(again), len(recs))
		}
	})
}

func TestParseBuildJSON(t *testing.T) {
	// Nix 2.8 and current Nix print the same shape for nix build --json.
	out := `[{"drvPath":"/nix/store/g5zbxxxx.drv","outputs":{"out":"/nix/store"}}]`
	if _, err := parseBuildJSON([]byte(out)); err == nil || !strings.Contains(err.Error(), "not a store path") {
		t.Errorf("bare store dir accepted: %v", err)
	}
	for _, bad := range []string{``, `{}`, `[]`, `[{"outputs":{}}]`, `[{"outputs":{"out":"a"}},{"outputs":{"out":"b"}}]`, `[{"outputs":{"out":"/etc"}}]`} {
		if _, err := parseBuildJSON([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzParseBuildJSON(f *testing.F) {
	f.Add(`[{"drvPath":"/nix/store/g5zb.drv","outputs":{"out":"/nix/store/0nw6n2ik1qjyq3a3y1dd2y4pjv1x1b2x-x"}}]`)
	f.Add(`[{"outputs":{"out":"/nix/store/../../etc"}}]`)
	f.Fuzz(func(t *testing.T, in string) {
		p, err := parseBuildJSON([]byte(in))
		if err == nil && !isStorePath(p) {
			t.Fatalf("returned %q", p)
		}
	})
}

func TestNixErrorSummary(t *testing.T) {
	stderr := "warning: Git tree '/x' is dirty\nbuilding '/nix/store/a.drv'...\n\x1b[31;1merror:\x1b[0m builder for '/nix/store/b.drv' failed with exit code 3;\n       last 1 log lines:\n       > boom\n       For full logs, run 'nix log /nix/store/b.drv'.\n"
	got := NixErrorSummary([]byte(stderr))
	want := "error: builder for '/nix/store/b.drv' failed with exit code 3; last 1 log lines: > boom"
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
	if got := NixErrorSummary([]byte("a\nb\nc\nd\n")); got != "c d" {
		t.Errorf("no error line: %q", got)
	}
}

func TestNixErrorSummaryCascade(t *testing.T) {
	stderr := "error: builder for '/nix/store/b-fails.drv' failed with exit code 4;\n       last 1 log lines:\n       > fails on purpose\n" +
		"error: 1 dependencies of derivation '/nix/store/c-top.drv' failed to build\n"
	got := NixErrorSummary([]byte(stderr))
	if got != "error: builder for '/nix/store/b-fails.drv' failed with exit code 4; last 1 log lines: > fails on purpose" {
		t.Errorf("got %q", got)
	}
	if got := NixErrorSummary([]byte("error: 1 dependencies of derivation 'x' failed to build\n")); got == "" {
		t.Error("a lone consequence is dropped")
	}
}

func FuzzNixErrorSummary(f *testing.F) {
	f.Add([]byte("error: x\n  y\n"))
	f.Add([]byte("error: builder for 'a' failed\nerror: 1 dependencies of derivation 'b' failed to build\nerror: build of 'c' failed\n"))
	f.Add([]byte("\x1b[1merror:\x1b[0m " + strings.Repeat("é", 400)))
	f.Fuzz(func(t *testing.T, in []byte) {
		s := NixErrorSummary(in)
		if strings.ContainsAny(s, "\n\r\x1b") || len(s) > 600 || (utf8.Valid(in) && !utf8.ValidString(s)) {
			t.Fatalf("summary %q", s)
		}
		if h := NixSetupHint(in); strings.ContainsAny(h, "\n\r") {
			t.Fatalf("hint %q", h)
		}
	})
}

func TestFlakeAttr(t *testing.T) {
	for in, want := range map[string]string{
		".#host":             ".#nixosConfigurations.host.config.system.build.toplevel",
		"path:/a#b#my.host":  `path:/a#b#nixosConfigurations."my.host".config.system.build.toplevel`,
		"github:o/r#web-01'": "github:o/r#nixosConfigurations.web-01'.config.system.build.toplevel",
	} {
		got, err := FlakeAttr(in)
		if err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", ".", ".#", "#host"} {
		if _, err := FlakeAttr(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestInputValidate(t *testing.T) {
	for _, in := range []Input{{}, {Flake: ".#a", Toplevel: "/nix/store/x"}, {Config: "c", NixOptions: []string{"novalue"}}, {Flake: ".#a", NixOptions: []string{"=v"}}} {
		if in.Validate() == nil {
			t.Errorf("accepted %+v", in)
		}
	}
	if err := (Input{Flake: ".#a", NixOptions: []string{"substituters=", "max-jobs=2"}}).Validate(); err != nil {
		t.Error(err)
	}
	if got := (Input{NixOptions: []string{"substituters=", "a=b=c"}}).optionArgs(); !slices.Equal(got, []string{"--option", "substituters", "", "--option", "a", "b=c"}) {
		t.Errorf("optionArgs %q", got)
	}
}

func TestParseAdd(t *testing.T) {
	for in, want := range map[string]Add{
		"./motd:/etc/motd":     {"./motd", "etc/motd"},
		"a:b:/srv//x/":         {"a:b", "srv/x"},
		"/host/dir:etc/nixos/": {"/host/dir", "etc/nixos"},
	} {
		got, err := ParseAdd(in)
		if err != nil || got != want {
			t.Errorf("%s: %+v %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "x", "x:", ":/etc", "x:/", "x:/nix/store/abc", "x:nix", "x:../etc", "x:/etc/../.."} {
		if _, err := ParseAdd(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzParseAdd(f *testing.F) {
	f.Add("./motd:/etc/motd")
	f.Add("x:/a/../../b")
	f.Fuzz(func(t *testing.T, in string) {
		a, err := ParseAdd(in)
		if err != nil {
			return
		}
		if a.Dest == "." || strings.HasPrefix(a.Dest, "/") || strings.Contains("/"+a.Dest+"/", "/../") || strings.HasPrefix(a.Dest, "nix/store") {
			t.Fatalf("%q gave dest %q", in, a.Dest)
		}
	})
}

// CompareNames is the order of a depth-first walk with sorted children.
func TestCompareNames(t *testing.T) {
	names := []string{".", "a", "a/b", "a/b/c", "a-c", "a.d", "a/b-x", "a0", "b", "a/b.", "ab", "a/a"}
	want := []string{".", "a", "a/a", "a/b", "a/b/c", "a/b-x", "a/b.", "a-c", "a.d", "a0", "ab", "b"}
	r := rand.New(rand.NewSource(1))
	for range 20 {
		r.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
		s := slices.Clone(names)
		slices.SortFunc(s, CompareNames)
		if !slices.Equal(s, want) {
			t.Fatalf("sorted %q\nwant   %q", s, want)
		}
	}
}

func FuzzCompareNames(f *testing.F) {
	f.Add("a/b", "a-c")
	f.Add(".", "x")
	f.Fuzz(func(t *testing.T, a, b string) {
		// Component-wise comparison, the slow way.
		want := 0
		switch {
		case a == b:
		case a == ".":
			want = -1
		case b == ".":
			want = 1
		default:
			want = slices.Compare(strings.Split(a, "/"), strings.Split(b, "/"))
		}
		got := CompareNames(a, b)
		if got != sign(want) || CompareNames(b, a) != -got {
			t.Fatalf("CompareNames(%q, %q) = %d, want %d", a, b, got, want)
		}
	})
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}
