using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using Npgsql;

namespace PromoStream;

/// <summary>
/// Rows in PostgreSQL's binary COPY format (https://www.postgresql.org/docs/current/sql-copy.html), encoded straight
/// into a buffer: several times cheaper than a typed write per field. Either built ahead and sent whole (the ledger
/// builds a batch's staging rows while the writer connection is still busy with the batch before; a retry sends the
/// same bytes again), or streamed into a COPY as they are written, a buffer at a time, so that memory stays flat
/// however many rows a campaign has.
/// </summary>
internal sealed class CopyRows
{
    // The signature "PGCOPY\n\xff\r\n\0", then no flags and no header extension.
    private static readonly byte[] Header = [(byte)'P', (byte)'G', (byte)'C', (byte)'O', (byte)'P', (byte)'Y', (byte)'\n', 0xFF, (byte)'\r', (byte)'\n', 0,
        0, 0, 0, 0, 0, 0, 0, 0];
    private static readonly byte[] Trailer = [0xFF, 0xFF];
    // Strict, as Npgsql's own encoder: text that is not valid UTF-16 fails here instead of reaching the table altered.
    private static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
    private const int StreamedBufferBytes = 256 * 1024;

    private readonly ArrayBufferWriter<byte> _buffer;
    private readonly Stream? _copy;

    /// <summary>
    /// Rows to be sent whole, later, with <see cref="SendTo"/>, in a buffer sized for about <paramref name="expectedBytes"/>:
    /// grown by doubling instead, a batch's buffer passed through four large arrays, each one more for the GC to reclaim.
    /// </summary>
    public CopyRows(int expectedBytes = 0)
    {
        _buffer = new ArrayBufferWriter<byte>(Math.Max(expectedBytes, 4096));
        _buffer.Write(Header);
    }

    private CopyRows(ArrayBufferWriter<byte> fragment) => _buffer = fragment;

    /// <summary>
    /// Fields without the COPY header, encoded once for <see cref="Encoded"/> to copy into many rows: a campaign's eight
    /// columns are the same in each of its subscribers' rows, and copying them is cheaper than encoding them again.
    /// </summary>
    public static CopyRows Fragment(int expectedBytes) => new(new ArrayBufferWriter<byte>(Math.Max(expectedBytes, 256)));

    public ReadOnlySpan<byte> Written => _buffer.WrittenSpan;

    /// <summary>The bytes of a <see cref="Fragment"/>, as they are.</summary>
    public void Encoded(ReadOnlySpan<byte> encoded) => _buffer.Write(encoded);

    // Small at first: most writes are small (a light stream's batches), and an array of 85 KB or more is a large-object
    // allocation, which the GC collects only with its oldest generation.
    private CopyRows(Stream copy) : this(64 * 1024) => _copy = copy;

    /// <summary>Runs <paramref name="copyCommand"/> (a COPY … FROM STDIN (FORMAT BINARY)) with the rows <paramref name="write"/> writes.</summary>
    public static void Stream(NpgsqlConnection connection, string copyCommand, Action<CopyRows> write)
    {
        using var copy = connection.BeginRawBinaryCopy(copyCommand);
        var rows = new CopyRows(copy);
        write(rows);
        rows.WriteRestTo(copy);
    }

    public void StartRow(short fields)
    {
        if (_copy is not null && _buffer.WrittenCount >= StreamedBufferBytes)
        {
            _copy.Write(_buffer.WrittenSpan);
            _buffer.ResetWrittenCount();
        }
        BinaryPrimitives.WriteInt16BigEndian(_buffer.GetSpan(2), fields);
        _buffer.Advance(2);
    }

    public void Int(int value)
    {
        var span = _buffer.GetSpan(8);
        BinaryPrimitives.WriteInt32BigEndian(span, 4);
        BinaryPrimitives.WriteInt32BigEndian(span[4..], value);
        _buffer.Advance(8);
    }

    public void Long(long value)
    {
        var span = _buffer.GetSpan(12);
        BinaryPrimitives.WriteInt32BigEndian(span, 8);
        BinaryPrimitives.WriteInt64BigEndian(span[4..], value);
        _buffer.Advance(12);
    }

    public void Bool(bool value)
    {
        var span = _buffer.GetSpan(5);
        BinaryPrimitives.WriteInt32BigEndian(span, 1);
        span[4] = value ? (byte)1 : (byte)0;
        _buffer.Advance(5);
    }

    public void Uuid(Guid value)
    {
        var span = _buffer.GetSpan(20);
        BinaryPrimitives.WriteInt32BigEndian(span, 16);
        value.TryWriteBytes(span[4..], bigEndian: true, out _);
        _buffer.Advance(20);
    }

    public void Text(string value)
    {
        var span = _buffer.GetSpan(4 + Utf8.GetMaxByteCount(value.Length));
        var length = Utf8.GetBytes(value, span[4..]);
        BinaryPrimitives.WriteInt32BigEndian(span, length);
        _buffer.Advance(4 + length);
    }

    /// <summary>Runs <paramref name="copyCommand"/> (a COPY … FROM STDIN (FORMAT BINARY)) with these rows.</summary>
    public void SendTo(NpgsqlConnection connection, string copyCommand)
    {
        using var copy = connection.BeginRawBinaryCopy(copyCommand);
        WriteRestTo(copy);
    }

    private void WriteRestTo(Stream copy)
    {
        copy.Write(_buffer.WrittenSpan);
        copy.Write(Trailer);
    }
}
