using Npgsql;
using Xunit;

namespace PromoStream.Tests;

[Collection(Stack.Name)]
public class PostgresDatabaseTests
{
    [Fact]
    public void MissingSchemaSaysToRunInitDb()
    {
        var db = PostgresServer.NewDatabase(withSchema: false);
        using var dataSource = PostgresDatabase.CreateDataSource(db);
        using var store = new PostgresDatabase(dataSource);
        var e = Assert.Throws<SchemaException>(store.CheckSchema);
        Assert.Contains("subscribers_feedback", e.Message);
        Assert.Contains("--init-db", e.Message);
        store.ApplySchema();
        store.ApplySchema(); // idempotent
        store.CheckSchema();
    }

    [Fact]
    public void ATableWithoutTheUniqueIndexIsRefusedAndDuplicateRowsAreExplained()
    {
        var db = PostgresServer.NewDatabase(withSchema: false);
        var contractTable = PostgresDatabase.SchemaSql().Split("CREATE UNIQUE INDEX")[0];
        PostgresServer.Execute(db, contractTable);
        using var dataSource = PostgresDatabase.CreateDataSource(db);
        using var store = new PostgresDatabase(dataSource);
        Assert.Contains("unique index", Assert.Throws<SchemaException>(store.CheckSchema).Message);
        for (var i = 0; i < 2; i++)
            PostgresServer.Execute(db, "INSERT INTO subscribers_feedback (restaurant_id, adv_campaign_id, adv_campaign_content, adv_campaign_owner, " +
                "adv_campaign_owner_contact, adv_campaign_datetime_start, adv_campaign_datetime_end, datetime_created, client_id, trigger_datetime_created) " +
                "VALUES ('r', 'c', 'x', 'o', 'e', 1, 2, 1, 'client', 1)");
        var e = Assert.Throws<SchemaException>(store.ApplySchema);
        Assert.Contains("repeat the natural key", e.Message);
    }
}

[Collection(Stack.Name)]
public class SubscriberDirectoryTests
{
    [Fact]
    public void DuplicateSubscriptionRowsGiveOneClientAndChangesShowAfterTheRefreshInterval()
    {
        var db = PostgresServer.NewDatabase();
        foreach (var client in new[] { "a", "b", "b" })
            PostgresServer.Execute(db, "INSERT INTO subscribers_restaurants (client_id, restaurant_id) VALUES ($1, 'r1')", client);
        using var dataSource = PostgresDatabase.CreateDataSource(db);
        long now = 0;
        var directory = new SubscriberDirectory(dataSource, TimeSpan.FromSeconds(30), () => now);
        directory.Prepare(["r1", "r2"]);
        Assert.Equal(["a", "b"], directory.ClientsOf("r1").Order());
        Assert.Empty(directory.ClientsOf("r2"));

        PostgresServer.Execute(db, "INSERT INTO subscribers_restaurants (client_id, restaurant_id) VALUES ('c', 'r1'), ('z', 'r2')");
        PostgresServer.Execute(db, "DELETE FROM subscribers_restaurants WHERE client_id = 'a'");
        now = 29_000;
        directory.Prepare(["r1", "r2"]);
        Assert.Equal(["a", "b"], directory.ClientsOf("r1").Order()); // cached within the interval
        now = 30_000;
        directory.Prepare(["r1", "r2"]);
        Assert.Equal(["b", "c"], directory.ClientsOf("r1").Order());
        Assert.Equal(["z"], directory.ClientsOf("r2"));
    }
}
