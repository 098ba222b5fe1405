package mgengine

import (
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// TestAuthShapes: the queries and merge commands of users and roles take
// the shapes mongodump and mongorestore use (mongo-tools 100.10:
// --dumpDbUsersAndRoles reads admin.system.users and admin.system.roles
// with {db: <database>}; RestoreUsersOrRoles runs _mergeAuthzCollections
// on admin with temporary collections named "admin.<name>", drop, and db
// "" for every database). They cannot run on FerretDB, which has neither
// users nor the command.
func TestAuthShapes(t *testing.T) {
	for _, c := range []struct {
		dbs  []string
		want string
	}{
		{nil, `{}`},
		{[]string{"app"}, `{"db": {"$in": ["app"]}}`},
		{[]string{"app", "shop"}, `{"db": {"$in": ["app","shop"]}}`},
	} {
		b, err := bson.Marshal(authFilter(c.dbs))
		if err != nil {
			t.Fatal(err)
		}
		if got := bson.Raw(b).String(); got != c.want {
			t.Errorf("authFilter(%v) = %s, want %s", c.dbs, got, c.want)
		}
	}
	str := func(cmds []bson.D) string {
		var out string
		for _, c := range cmds {
			b, err := bson.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			out += bson.Raw(b).String() + "\n"
		}
		return out
	}
	all := str(mergeAuthCommands(&Auth{}, true, true, false))
	want := `{"_mergeAuthzCollections": {"$numberInt":"1"},"tempUsersCollection": "admin.amber_tempusers","tempRolesCollection": "admin.amber_temproles","drop": false,"db": "","writeConcern": {"w": "majority"}}` + "\n"
	if all != want {
		t.Errorf("every database:\n got %s\nwant %s", all, want)
	}
	two := str(mergeAuthCommands(&Auth{Databases: []string{"app", "shop"}}, true, false, true))
	want = `{"_mergeAuthzCollections": {"$numberInt":"1"},"tempUsersCollection": "admin.amber_tempusers","drop": true,"db": "app","writeConcern": {"w": "majority"}}` + "\n" +
		`{"_mergeAuthzCollections": {"$numberInt":"1"},"tempUsersCollection": "admin.amber_tempusers","drop": true,"db": "shop","writeConcern": {"w": "majority"}}` + "\n"
	if two != want {
		t.Errorf("two databases, users only, drop:\n got %s\nwant %s", two, want)
	}
}
