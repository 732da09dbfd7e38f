package oci

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
)

// The example of nixpkgs' closure-graph.py header:
//
//	A - B - C - D -\
//	 \   \   \      \
//	  \   \   \      \
//	   \   \ - E ---- F
//	    \- G
//
// gives A 1, B 2, C 3, D 4, E 5, F 9, G 2 and the order F E D C B G A.
func TestPopularityNixpkgsExample(t *testing.T) {
	p := func(s string) string { return "/nix/store/" + s + s + s + "-" + s }
	refs := map[string][]string{
		p("a"): {p("a"), p("b"), p("g")}, // self reference ignored
		p("b"): {p("c"), p("e")},
		p("c"): {p("d"), p("e")},
		p("d"): {p("f")},
		p("e"): {p("f")},
		p("f"): nil,
		p("g"): nil,
	}
	paths := []string{p("g"), p("f"), p("e"), p("d"), p("c"), p("b"), p("a")}
	got := PopularityOrder(paths, refs)
	want := []string{p("f"), p("e"), p("d"), p("c"), p("b"), p("g"), p("a")}
	if !slices.Equal(got, want) {
		t.Fatalf("order\n got %v\nwant %v", got, want)
	}
}

// The second example (closure-graph.py's graph_popularity_contest doc, with
// its cache): foo -> bar, baz; bar -> baz; baz -> tux gives foo 1, bar 2,
// baz 4, tux 6.
func TestPopularityCounts(t *testing.T) {
	refs := map[string][]string{
		"/nix/store/h-foo": {"/nix/store/h-bar", "/nix/store/h-baz"},
		"/nix/store/h-bar": {"/nix/store/h-baz"},
		"/nix/store/h-baz": {"/nix/store/h-tux"},
	}
	paths := []string{"/nix/store/h-foo", "/nix/store/h-bar", "/nix/store/h-baz", "/nix/store/h-tux"}
	got := PopularityOrder(paths, refs)
	want := []string{"/nix/store/h-tux", "/nix/store/h-baz", "/nix/store/h-bar", "/nix/store/h-foo"}
	if !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
}

// Ties are broken by package name, not by hash: the hash part moves to the
// end of the key.
func TestPopularityTiesByName(t *testing.T) {
	refs := map[string][]string{
		"/nix/store/zzz-root": {"/nix/store/aaa-zlib", "/nix/store/bbb-bash", "/nix/store/ccc-acl"},
	}
	paths := []string{"/nix/store/zzz-root", "/nix/store/aaa-zlib", "/nix/store/bbb-bash", "/nix/store/ccc-acl"}
	got := PopularityOrder(paths, refs)
	// All leaves have popularity 2 (root 1): acl, bash, zlib by name.
	want := []string{"/nix/store/ccc-acl", "/nix/store/bbb-bash", "/nix/store/aaa-zlib", "/nix/store/zzz-root"}
	if !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
}

func TestGroupByPopularity(t *testing.T) {
	// A chain root -> p1 -> p2 -> ... -> p9: the deepest is the most popular.
	var paths []string
	refs := map[string][]string{}
	for i := range 10 {
		paths = append(paths, fmt.Sprintf("/nix/store/h%d-p%d", i, i))
		if i > 0 {
			refs[paths[i-1]] = []string{paths[i]}
		}
	}
	order := PopularityOrder(paths, refs)
	if order[0] != paths[9] || order[9] != paths[0] {
		t.Fatalf("chain order: %v", order)
	}
	cases := []struct {
		maxLayers int
		sizes     []int
	}{
		{100, []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}}, // budget large enough: one path per layer
		{12, []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
		{11, []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}}, // 9 singles + last group of 1
		{10, []int{1, 1, 1, 1, 1, 1, 1, 1, 2}},    // 8 singles + 2 merged: 9 groups + generated layer = 10
		{4, []int{1, 1, 8}},
		{2, []int{10}},
		{1, []int{10}},
		{0, []int{10}},
	}
	for _, c := range cases {
		groups := GroupByPopularity(paths, refs, c.maxLayers)
		var sizes []int
		var flat []string
		for _, g := range groups {
			sizes = append(sizes, len(g))
			flat = append(flat, g...)
		}
		if !reflect.DeepEqual(sizes, c.sizes) {
			t.Errorf("maxLayers %d: group sizes %v, want %v", c.maxLayers, sizes, c.sizes)
		}
		if !slices.Equal(flat, order) {
			t.Errorf("maxLayers %d: groups do not keep the popularity order", c.maxLayers)
		}
		if c.maxLayers >= 2 && len(groups) > c.maxLayers-1 {
			t.Errorf("maxLayers %d: %d groups leave no layer for generated files", c.maxLayers, len(groups))
		}
	}
	if GroupByPopularity(nil, nil, 100) != nil {
		t.Error("groups for no paths")
	}
}

// References outside the closure are ignored; a reference cycle (impossible
// in a real store, but refs are input) terminates and keeps every path.
func TestPopularityOddGraphs(t *testing.T) {
	refs := map[string][]string{
		"/nix/store/a-a": {"/nix/store/b-b", "/nix/store/x-outside"},
		"/nix/store/b-b": {"/nix/store/c-c"},
		"/nix/store/c-c": {"/nix/store/b-b"},
		"/nix/store/d-d": {"/nix/store/e-e"},
		"/nix/store/e-e": {"/nix/store/d-d"},
	}
	paths := []string{"/nix/store/a-a", "/nix/store/b-b", "/nix/store/c-c", "/nix/store/d-d", "/nix/store/e-e"}
	got := PopularityOrder(paths, refs)
	if len(got) != len(paths) {
		t.Fatalf("order %v lost paths", got)
	}
	s := slices.Clone(got)
	slices.Sort(s)
	if !slices.Equal(s, paths) {
		t.Fatalf("order %v is not a permutation of %v", got, paths)
	}
	// d and e are unreachable from any root: last, by name.
	if got[3] != "/nix/store/d-d" || got[4] != "/nix/store/e-e" {
		t.Errorf("unreachable paths not last: %v", got)
	}
}

// FuzzPopularity feeds random graphs (cycles included): the order is always
// a deterministic permutation of the closure, and the groups cover every
// path within the layer budget.
func FuzzPopularity(f *testing.F) {
	f.Add([]byte{0, 1, 1, 2, 2, 3}, 4, 3)
	f.Add([]byte{0, 0, 1, 0, 5, 5}, 6, 2)
	f.Fuzz(func(t *testing.T, edges []byte, n, maxLayers int) {
		n = 1 + abs(n)%40
		paths := make([]string, n)
		for i := range paths {
			paths[i] = fmt.Sprintf("/nix/store/%02d-p", i)
		}
		refs := map[string][]string{}
		for i := 0; i+1 < len(edges); i += 2 {
			a, b := int(edges[i])%n, int(edges[i+1])%n
			refs[paths[a]] = append(refs[paths[a]], paths[b])
		}
		got := PopularityOrder(paths, refs)
		again := PopularityOrder(slices.Clone(paths), refs)
		if !slices.Equal(got, again) {
			t.Fatal("not deterministic")
		}
		s := slices.Clone(got)
		slices.Sort(s)
		if !slices.Equal(s, paths) {
			t.Fatalf("not a permutation: %v", got)
		}
		groups := GroupByPopularity(paths, refs, maxLayers%200)
		total := 0
		for _, g := range groups {
			total += len(g)
		}
		if total != n || len(groups) > max(maxLayers%200-1, 1) {
			t.Fatalf("%d groups with %d paths for %d paths, maxLayers %d", len(groups), total, n, maxLayers%200)
		}
	})
}

func abs(n int) int {
	if n < 0 {
		if n == -n { // math.MinInt
			return 0
		}
		return -n
	}
	return n
}

// referenceOrder is nixpkgs' closure-graph.py transcribed directly: one
// memoised popularity dictionary per path (graph_popularity_contest with
// its cache), then order_by_popularity. Only for acyclic graphs.
func referenceOrder(paths []string, refs map[string][]string) []string {
	in := map[string]bool{}
	for _, p := range paths {
		in[p] = true
	}
	children := map[string][]string{}
	referenced := map[string]bool{}
	for p := range in {
		seen := map[string]bool{}
		for _, r := range refs[p] {
			if r != p && in[r] && !seen[r] {
				seen[r] = true
				children[p] = append(children[p], r)
				referenced[r] = true
			}
		}
	}
	memo := map[string]map[string]uint64{}
	var contest func(n string) map[string]uint64
	contest = func(n string) map[string]uint64 {
		if m, ok := memo[n]; ok {
			return m
		}
		pop := map[string]uint64{}
		for _, c := range children[n] {
			pop[c]++
			for s, v := range contest(c) {
				pop[s] += v + 1
			}
		}
		memo[n] = pop
		return pop
	}
	total := map[string]uint64{}
	for p := range in {
		if referenced[p] {
			continue
		}
		total[p]++
		for s, v := range contest(p) {
			total[s] += v + 1
		}
	}
	var out []string
	for p := range total {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b string) int {
		if total[a] != total[b] {
			if total[a] > total[b] {
				return -1
			}
			return 1
		}
		if packageName(a) < packageName(b) {
			return -1
		}
		if packageName(a) > packageName(b) {
			return 1
		}
		return 0
	})
	return out
}

// FuzzPopularityMatchesNixpkgs compares the memory-lean evaluation with the
// direct transcription on random acyclic graphs.
func FuzzPopularityMatchesNixpkgs(f *testing.F) {
	f.Add([]byte{0, 1, 1, 2, 0, 2, 2, 3, 1, 3}, 5)
	f.Add([]byte{0, 1, 0, 2, 1, 3, 2, 3, 3, 4, 1, 4}, 6)
	f.Fuzz(func(t *testing.T, edges []byte, n int) {
		n = 1 + abs(n)%30
		paths := make([]string, n)
		for i := range paths {
			paths[i] = fmt.Sprintf("/nix/store/%02d-p%d", i, i%3)
		}
		refs := map[string][]string{}
		for i := 0; i+1 < len(edges); i += 2 {
			a, b := int(edges[i])%n, int(edges[i+1])%n
			if a > b {
				a, b = b, a
			}
			if a != b { // edges go to higher indexes only: acyclic
				refs[paths[a]] = append(refs[paths[a]], paths[b])
			}
		}
		got := PopularityOrder(paths, refs)
		want := referenceOrder(paths, refs)
		if !slices.Equal(got, want) {
			t.Fatalf("order\n got %v\nwant %v\nrefs %v", got, want, refs)
		}
	})
}

// BenchmarkPopularityOrder: a closure the size of a NixOS system (1500
// paths, ~12 references each, all pointing "down").
func BenchmarkPopularityOrder(b *testing.B) {
	const n = 1500
	paths := make([]string, n)
	for i := range paths {
		paths[i] = fmt.Sprintf("/nix/store/%032d-p%d", i, i)
	}
	refs := map[string][]string{}
	x := uint32(7)
	for i := range n - 1 {
		for range 12 {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			j := i + 1 + int(x%uint32(n-i-1))
			refs[paths[i]] = append(refs[paths[i]], paths[j])
		}
	}
	for b.Loop() {
		PopularityOrder(paths, refs)
	}
}
