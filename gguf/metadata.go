package gguf

import (
	"fmt"
	"math"
)

// ValueType is the type of a GGUF metadata value, numbered as in the GGUF
// specification.
type ValueType uint32

// GGUF metadata value types.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

var valueTypeNames = [...]string{"uint8", "int8", "uint16", "int16", "uint32", "int32",
	"float32", "bool", "string", "array", "uint64", "int64", "float64"}

func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("valuetype(%d)", uint32(t))
}

// KV is one metadata key-value pair. Value holds one of the Go types
// uint8, int8, uint16, int16, uint32, int32, uint64, int64, float32, float64,
// bool, string for a scalar; the typed slices []uint8, []int8, []uint16,
// []int16, []uint32, []int32, []uint64, []int64, []float32, []float64,
// []bool, []string for an array of scalars; or []any, each element itself
// an array value, for an array of arrays. The Go type fixes the GGUF type,
// so a file read and written back keeps its value types.
type KV struct {
	Key   string
	Value any
}

// TypeOf returns the GGUF type of a metadata value, and for an array the
// type of its elements; it fails for a Go type that has no GGUF counterpart
// or an array of arrays holding a non-array.
func TypeOf(v any) (typ, elem ValueType, err error) {
	switch v := v.(type) {
	case uint8:
		return TypeUint8, 0, nil
	case int8:
		return TypeInt8, 0, nil
	case uint16:
		return TypeUint16, 0, nil
	case int16:
		return TypeInt16, 0, nil
	case uint32:
		return TypeUint32, 0, nil
	case int32:
		return TypeInt32, 0, nil
	case uint64:
		return TypeUint64, 0, nil
	case int64:
		return TypeInt64, 0, nil
	case float32:
		return TypeFloat32, 0, nil
	case float64:
		return TypeFloat64, 0, nil
	case bool:
		return TypeBool, 0, nil
	case string:
		return TypeString, 0, nil
	case []uint8:
		return TypeArray, TypeUint8, nil
	case []int8:
		return TypeArray, TypeInt8, nil
	case []uint16:
		return TypeArray, TypeUint16, nil
	case []int16:
		return TypeArray, TypeInt16, nil
	case []uint32:
		return TypeArray, TypeUint32, nil
	case []int32:
		return TypeArray, TypeInt32, nil
	case []uint64:
		return TypeArray, TypeUint64, nil
	case []int64:
		return TypeArray, TypeInt64, nil
	case []float32:
		return TypeArray, TypeFloat32, nil
	case []float64:
		return TypeArray, TypeFloat64, nil
	case []bool:
		return TypeArray, TypeBool, nil
	case []string:
		return TypeArray, TypeString, nil
	case []any:
		for i, e := range v {
			if t, _, err := TypeOf(e); err != nil || t != TypeArray {
				return 0, 0, fmt.Errorf("array of arrays: element %d is a %T, not an array", i, e)
			}
		}
		return TypeArray, TypeArray, nil
	}
	return 0, 0, fmt.Errorf("no GGUF type for a Go %T", v)
}

// describe names the GGUF type of a value for error messages ("uint32",
// "array of string").
func describe(v any) string {
	t, e, err := TypeOf(v)
	switch {
	case err != nil:
		return fmt.Sprintf("Go %T", v)
	case t == TypeArray:
		return "array of " + e.String()
	}
	return t.String()
}

// metaError is the error of a getter: the file, the key and what is wrong.
func (f *File) metaError(key, format string, args ...any) error {
	return fmt.Errorf("gguf: %s: metadata key %q: %s", f.name, key, fmt.Sprintf(format, args...))
}

// Metadata returns all key-value pairs in file order. The slice and the
// array values are shared with the File: do not modify them.
func (f *File) Metadata() []KV { return f.kvs }

// Value returns the value of key, or ok=false when the file lacks it.
func (f *File) Value(key string) (v any, ok bool) {
	i, ok := f.keys[key]
	if !ok {
		return nil, false
	}
	return f.kvs[i].Value, true
}

// Architecture returns general.architecture, or "" when the file lacks it
// or it is not a string.
func (f *File) Architecture() string {
	s, _, _ := f.LookupString("general.architecture")
	return s
}

// lookup runs conv on the value of key: ok=false without error when the key
// is missing; an error naming the key and both types when conv rejects it.
func lookup[T any](f *File, key, want string, conv func(any) (T, bool)) (T, bool, error) {
	var zero T
	v, ok := f.Value(key)
	if !ok {
		return zero, false, nil
	}
	r, ok := conv(v)
	if !ok {
		return zero, true, f.metaError(key, "holds %s (%v), want %s", describe(v), short(v), want)
	}
	return r, true, nil
}

// must turns a missing key into an error.
func must[T any](f *File, key string, v T, ok bool, err error) (T, error) {
	if err == nil && !ok {
		err = f.metaError(key, "missing")
	}
	return v, err
}

// short renders a value for an error message without dumping a vocabulary.
func short(v any) string {
	s := fmt.Sprint(v)
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return s
}

// LookupString returns the string value of key; ok is false when the key is
// missing, and err is set when it holds another type.
func (f *File) LookupString(key string) (string, bool, error) {
	return lookup(f, key, "string", func(v any) (string, bool) { s, ok := v.(string); return s, ok })
}

// String returns the string value of key, or an error naming the key when
// it is missing or not a string.
func (f *File) String(key string) (string, error) {
	v, ok, err := f.LookupString(key)
	return must(f, key, v, ok, err)
}

// asUint converts any integer type holding a value >= 0.
func asUint(v any) (uint64, bool) {
	switch v := v.(type) {
	case uint8:
		return uint64(v), true
	case uint16:
		return uint64(v), true
	case uint32:
		return uint64(v), true
	case uint64:
		return v, true
	}
	if i, ok := asInt(v); ok && i >= 0 {
		return uint64(i), true
	}
	return 0, false
}

// asInt converts any integer type whose value fits an int64.
func asInt(v any) (int64, bool) {
	switch v := v.(type) {
	case int8:
		return int64(v), true
	case int16:
		return int64(v), true
	case int32:
		return int64(v), true
	case int64:
		return v, true
	case uint8:
		return int64(v), true
	case uint16:
		return int64(v), true
	case uint32:
		return int64(v), true
	case uint64:
		if v <= math.MaxInt64 {
			return int64(v), true
		}
	}
	return 0, false
}

// asFloat converts a float type; integers are accepted too since converters
// sometimes write a whole number such as rope.freq_base as one.
func asFloat(v any) (float64, bool) {
	switch v := v.(type) {
	case float32:
		return float64(v), true
	case float64:
		return v, true
	}
	if i, ok := asInt(v); ok {
		return float64(i), true
	}
	if u, ok := asUint(v); ok {
		return float64(u), true
	}
	return 0, false
}

// LookupUint returns the value of key, which may be of any integer type but
// must not be negative; ok is false when the key is missing.
func (f *File) LookupUint(key string) (uint64, bool, error) {
	return lookup(f, key, "a non-negative integer", asUint)
}

// Uint returns the value of key as LookupUint does, failing when it is
// missing.
func (f *File) Uint(key string) (uint64, error) {
	v, ok, err := f.LookupUint(key)
	return must(f, key, v, ok, err)
}

// LookupInt returns the value of key, which may be of any integer type that
// fits an int64; ok is false when the key is missing.
func (f *File) LookupInt(key string) (int64, bool, error) {
	return lookup(f, key, "an integer", asInt)
}

// Int returns the value of key as LookupInt does, failing when it is
// missing.
func (f *File) Int(key string) (int64, error) {
	v, ok, err := f.LookupInt(key)
	return must(f, key, v, ok, err)
}

// LookupFloat returns the value of key, a float32, a float64 or an integer;
// ok is false when the key is missing.
func (f *File) LookupFloat(key string) (float64, bool, error) {
	return lookup(f, key, "a number", asFloat)
}

// Float returns the value of key as LookupFloat does, failing when it is
// missing.
func (f *File) Float(key string) (float64, error) {
	v, ok, err := f.LookupFloat(key)
	return must(f, key, v, ok, err)
}

// LookupBool returns the bool value of key; ok is false when the key is
// missing.
func (f *File) LookupBool(key string) (bool, bool, error) {
	return lookup(f, key, "bool", func(v any) (bool, bool) { b, ok := v.(bool); return b, ok })
}

// Bool returns the bool value of key, failing when it is missing or of
// another type.
func (f *File) Bool(key string) (bool, error) {
	v, ok, err := f.LookupBool(key)
	return must(f, key, v, ok, err)
}

// LookupStrings returns the array of strings of key; ok is false when the
// key is missing. The slice is shared with the File.
func (f *File) LookupStrings(key string) ([]string, bool, error) {
	return lookup(f, key, "array of string", func(v any) ([]string, bool) { s, ok := v.([]string); return s, ok })
}

// Strings returns the array of strings of key, failing when it is missing or
// of another type.
func (f *File) Strings(key string) ([]string, error) {
	v, ok, err := f.LookupStrings(key)
	return must(f, key, v, ok, err)
}

// LookupFloats returns the array of key converted to float64; it may hold
// float32, float64 or integers. ok is false when the key is missing.
func (f *File) LookupFloats(key string) ([]float64, bool, error) {
	return lookup(f, key, "array of numbers", func(v any) ([]float64, bool) {
		return convertArray(v, asFloat)
	})
}

// Floats returns the array of key as LookupFloats does, failing when it is
// missing.
func (f *File) Floats(key string) ([]float64, error) {
	v, ok, err := f.LookupFloats(key)
	return must(f, key, v, ok, err)
}

// LookupInts returns the array of key converted to int64; it may hold any
// integer type whose values fit. ok is false when the key is missing.
func (f *File) LookupInts(key string) ([]int64, bool, error) {
	return lookup(f, key, "array of integers", func(v any) ([]int64, bool) {
		return convertArray(v, asInt)
	})
}

// Ints returns the array of key as LookupInts does, failing when it is
// missing.
func (f *File) Ints(key string) ([]int64, error) {
	v, ok, err := f.LookupInts(key)
	return must(f, key, v, ok, err)
}

// convertArray converts every element of a typed numeric slice with conv.
func convertArray[T any](v any, conv func(any) (T, bool)) ([]T, bool) {
	var out []T
	add := func(n int, at func(int) any) bool {
		out = make([]T, n)
		for i := range n {
			x, ok := conv(at(i))
			if !ok {
				return false
			}
			out[i] = x
		}
		return true
	}
	var ok bool
	switch a := v.(type) {
	case []uint8:
		ok = add(len(a), func(i int) any { return a[i] })
	case []int8:
		ok = add(len(a), func(i int) any { return a[i] })
	case []uint16:
		ok = add(len(a), func(i int) any { return a[i] })
	case []int16:
		ok = add(len(a), func(i int) any { return a[i] })
	case []uint32:
		ok = add(len(a), func(i int) any { return a[i] })
	case []int32:
		ok = add(len(a), func(i int) any { return a[i] })
	case []uint64:
		ok = add(len(a), func(i int) any { return a[i] })
	case []int64:
		ok = add(len(a), func(i int) any { return a[i] })
	case []float32:
		ok = add(len(a), func(i int) any { return a[i] })
	case []float64:
		ok = add(len(a), func(i int) any { return a[i] })
	}
	return out, ok
}
