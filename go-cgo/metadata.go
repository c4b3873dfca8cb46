package courier

/*
#include "courier.h"
*/
import "C"

import (
	"sort"
	"strings"
)

// MD is call metadata: lowercase keys to values, as in grpc-go. Keys ending in
// "-bin" carry binary values (raw bytes in the strings); all others printable
// ASCII. The core validates keys and values, and hides transport headers.
type MD map[string][]string

// Pairs makes an MD from key, value, key, value...; keys are lowercased.
func Pairs(kv ...string) MD {
	if len(kv)%2 == 1 {
		panic("courier.Pairs: odd number of arguments")
	}
	md := MD{}
	for i := 0; i < len(kv); i += 2 {
		k := strings.ToLower(kv[i])
		md[k] = append(md[k], kv[i+1])
	}
	return md
}

// Get is the values of a key (lowercased).
func (md MD) Get(key string) []string { return md[strings.ToLower(key)] }

// readMetadata copies a C list (borrowed or owned by the caller).
func readMetadata(m *C.CourierMetadata) MD {
	md := MD{}
	if m == nil {
		return md
	}
	n := int(C.courier_metadata_len(m))
	for i := 0; i < n; i++ {
		var k, v C.CourierStr
		var bin C.bool
		if C.courier_metadata_get(m, C.size_t(i), &k, &v, &bin) {
			key := goString(k)
			md[key] = append(md[key], goString(v))
		}
	}
	return md
}

// newCMetadata builds a C list for an outgoing call (nil for an empty MD).
// Keys are sorted so that the order of values on the wire is stable.
func newCMetadata(md MD) (*C.CourierMetadata, error) {
	if len(md) == 0 {
		return nil, nil
	}
	m := C.courier_metadata_new()
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range md[k] {
			var cerr *C.CourierError
			kp, kl := strArg(k)
			vp, vl := strArg(v)
			if !C.courier_metadata_append(m, kp, kl, vp, vl, &cerr) {
				C.courier_metadata_free(m)
				return nil, takeError(cerr)
			}
		}
	}
	return m, nil
}
