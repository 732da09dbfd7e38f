package oci

import (
	"math"
	"slices"
	"strings"
)

// GroupByPopularity splits the store paths of a closure into layers the way
// nixpkgs' dockerTools.streamLayeredImage does (pkgs/build-support/
// references-by-popularity): paths that many others depend on come first,
// each in a layer of its own, so that images built from the same nixpkgs
// share their bottom layers; the rest is merged into one last group.
//
// refs maps a path to its references (self references are ignored; a path
// missing from refs has none). The popularity of a path is nixpkgs' count:
// the references graph is unfolded into a tree from the roots (paths nobody
// in the closure refers to) and a path scores once for every place it
// appears in that tree, plus, for every appearance of a path above it, the
// score it has below that path. Paths are ordered by popularity, most
// popular first, ties by name with the hash part moved to the end (so
// "/nix/store/<hash>-glibc-2.40" sorts as "glibc-2.40-/nix/store/<hash>").
// Paths that are not reachable from any root (only possible with a
// reference cycle) follow in name order.
//
// maxLayers is the layer budget of the whole image, as nixpkgs' maxLayers:
// one layer is kept for the generated files, so at most maxLayers-1 groups
// are returned, the first maxLayers-2 with one path each. maxLayers below 2
// is taken as 2 (everything in one group). Counts saturate at 2^64-1, where
// nixpkgs' Python would go on with big integers; only pathological graphs
// reach that, and ties are then broken by name.
func GroupByPopularity(paths []string, refs map[string][]string, maxLayers int) [][]string {
	if len(paths) == 0 {
		return nil
	}
	order := PopularityOrder(paths, refs)
	maxLayers = max(maxLayers, 2)
	singles := maxLayers - 2
	var groups [][]string
	for i, p := range order {
		if i < singles {
			groups = append(groups, []string{p})
			continue
		}
		groups = append(groups, slices.Clone(order[i:]))
		break
	}
	return groups
}

// PopularityOrder returns paths ordered as described in GroupByPopularity.
//
// nixpkgs computes the counts with one dictionary per path of everything
// below it, which is quadratic in memory (tens of MB for a NixOS closure).
// Here the same recurrence is evaluated for one path s at a time over the
// paths in dependency order:
//
//	reach(n) = some child c of n is s or reaches s
//	f(n)     = sum over children c: [c = s] + (f(c) + 1 if reach(c))
//	pop(s)   = sum over roots r:    [r = s] + (f(r) + 1 if reach(r))
//
// which is O(paths × (paths + references)) time and O(paths + references)
// memory.
func PopularityOrder(paths []string, refs map[string][]string) []string {
	index := make(map[string]int, len(paths))
	var names []string
	for _, p := range paths {
		if _, dup := index[p]; !dup {
			index[p] = len(names)
			names = append(names, p)
		}
	}
	n := len(names)
	// Children: references within the closure, self references dropped,
	// duplicates dropped (nixpkgs builds a dict, so a repeated reference
	// counts once).
	children := make([][]int, n)
	referenced := make([]bool, n)
	for i, p := range names {
		seen := map[int]bool{}
		for _, r := range refs[p] {
			j, ok := index[r]
			if !ok || j == i || seen[j] {
				continue
			}
			seen[j] = true
			children[i] = append(children[i], j)
			referenced[j] = true
		}
		slices.Sort(children[i])
	}
	var roots []int
	for i := range names {
		if !referenced[i] {
			roots = append(roots, i)
		}
	}
	// Post-order (children first) of what the roots reach. A reference
	// cycle, impossible in a Nix store but possible in the input, is cut
	// where the walk meets it again (nixpkgs would recurse forever).
	const (
		unseen = iota
		active
		done
	)
	state := make([]uint8, n)
	var order []int
	type frame struct{ node, next int }
	for _, r := range roots {
		stack := []frame{{r, 0}}
		state[r] = active
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			if top.next < len(children[top.node]) {
				c := children[top.node][top.next]
				top.next++
				if state[c] == unseen {
					state[c] = active
					stack = append(stack, frame{c, 0})
				}
				continue
			}
			state[top.node] = done
			order = append(order, top.node)
			stack = stack[:len(stack)-1]
		}
	}
	pos := make([]int, n) // position in order, to recognise cut edges
	for i := range pos {
		pos[i] = -1
	}
	for k, i := range order {
		pos[i] = k
	}
	pop := make([]uint64, n)
	reach := make([]bool, n)
	f := make([]uint64, n)
	for _, s := range order {
		for _, m := range order {
			reach[m], f[m] = false, 0
			for _, c := range children[m] {
				if pos[c] >= pos[m] {
					continue // an edge back up a cycle
				}
				if c == s {
					reach[m] = true
					f[m] = satAdd(f[m], 1)
				}
				if reach[c] {
					reach[m] = true
					f[m] = satAdd(f[m], satAdd(f[c], 1))
				}
			}
		}
		for _, r := range roots {
			if r == s {
				pop[s] = satAdd(pop[s], 1)
			}
			if reach[r] {
				pop[s] = satAdd(pop[s], satAdd(f[r], 1))
			}
		}
	}
	ranked := slices.Clone(order)
	slices.SortFunc(ranked, func(a, b int) int {
		if pop[a] != pop[b] {
			if pop[a] > pop[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(packageName(names[a]), packageName(names[b]))
	})
	out := make([]string, 0, n)
	for _, i := range ranked {
		out = append(out, names[i])
	}
	var missing []string
	for i, p := range names {
		if pos[i] < 0 {
			missing = append(missing, p)
		}
	}
	slices.Sort(missing)
	return append(out, missing...)
}

// packageName is nixpkgs' sort key: the first "-"-separated part (the
// store directory and hash) moved to the end.
func packageName(p string) string {
	first, rest, ok := strings.Cut(p, "-")
	if !ok {
		return first
	}
	return rest + "-" + first
}

func satAdd(a, b uint64) uint64 {
	if a > math.MaxUint64-b {
		return math.MaxUint64
	}
	return a + b
}
